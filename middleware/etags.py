"""Entity tags (RFC 9110 §8.8.3): parsing, comparison, formatting and generation from a body."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import xxhash

__all__ = [
    "ANY",
    "EntityTag",
    "format_etag_list",
    "generate_etag",
    "parse_etag",
    "parse_etag_list",
    "strong_match",
    "weak_match",
]

ANY: Final = "*"
"""The `*` member of If-Match / If-None-Match: any current representation (RFC 9110 §13.1.1, §13.1.2)."""

# etagc = %x21 / %x23-7E / obs-text: a comma is a legal tag character, so lists are tokenised, never split.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
# One list element (possibly empty, §5.6.1.2) with its surrounding OWS and the comma or end that closes it.
_LIST_ELEMENT = re.compile(rf"[ \t]*(?:{_ENTITY_TAG.pattern})?[ \t]*(?:,|\Z)")


@dataclass(frozen=True, slots=True)
class EntityTag:
    """One entity-tag; `opaque` is the text between the quotes."""

    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'


def parse_etag(value: str) -> EntityTag | None:
    """An ETag field value (RFC 9110 §8.8.3); None when malformed, so the field is ignored."""
    match = _ENTITY_TAG.fullmatch(value.strip(" \t"))
    return None if match is None else EntityTag(match[2], weak=match[1] is not None)


def parse_etag_list(value: str) -> tuple[EntityTag, ...] | Literal["*"] | None:
    """`"*" / #entity-tag` of If-Match and If-None-Match (RFC 9110 §13.1.1-2, list rules §5.6.1).

    Empty list elements are skipped as §5.6.1.2 requires. None means the field is malformed or lists nothing,
    and a malformed precondition is ignored rather than guessed at (a 412 from a half-read list would be wrong).
    """
    if value.strip(" \t") == ANY:
        return ANY
    tags: list[EntityTag] = []
    pos = 0
    while pos < len(value):
        element = _LIST_ELEMENT.match(value, pos)
        if element is None:
            return None
        if element[2] is not None:
            tags.append(EntityTag(element[2], weak=element[1] is not None))
        pos = element.end()
    return tuple(tags) or None


def format_etag_list(tags: tuple[EntityTag, ...]) -> str:
    """The field value of a list of entity-tags, as a client would send it in If-None-Match."""
    return ", ".join(map(str, tags))


def strong_match(a: EntityTag, b: EntityTag) -> bool:
    """Strong comparison (RFC 9110 §8.8.3.2): neither weak, same opaque-tag. If-Match uses it."""
    return not a.weak and not b.weak and a.opaque == b.opaque


def weak_match(a: EntityTag, b: EntityTag) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2): same opaque-tag, either may be weak. If-None-Match uses it."""
    return a.opaque == b.opaque


def generate_etag(chunks: Iterable[bytes], *, weak: bool = False) -> EntityTag:
    """A validator made from the exact bytes sent (xxh3-128), so any change of the bytes changes the tag.

    Strong by default: equal bytes are the same representation (RFC 9110 §8.8.3.3), and only strong tags can
    satisfy If-Match.
    """
    return EntityTag(xxhash.xxh3_128_hexdigest(b"".join(chunks)), weak=weak)  # one call: the body is held anyway
