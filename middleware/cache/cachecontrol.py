"""Cache-Control (RFC 9111 §5.2): a forgiving parser, its inverse, and delta-seconds.

The parser never raises: a header it cannot read yields the directives it could read, which is the
most a cache can do with a malformed field.
"""

import re
from collections.abc import Mapping

__all__ = ["Directives", "delta_seconds", "format_cache_control", "parse_cache_control"]

Directives = Mapping[str, str | None]
"""Directive name (lowercase) -> argument (unquoted) or None when the directive has no argument."""

# One directive: a name, then optionally "=" and a quoted-string (escapes allowed) or a bare value.
_DIRECTIVE = re.compile(r'\s*([^\s=,"]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"?|([^\s,"]*)))?\s*(?:,|$)|[^,]*(?:,|$)', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DELTA_MAX = 2**31  # RFC 9111 §1.2.2: larger values are sent as 2147483648


def parse_cache_control(value: str) -> dict[str, str | None]:
    """Directives in header order; the first occurrence of a repeated directive wins (§4.2.1)."""
    directives: dict[str, str | None] = {}
    position = 0
    while position < len(value):
        match = _DIRECTIVE.match(value, position)
        if match is None or match.end() == position:  # pragma: no cover - the pattern always consumes
            break
        position = match.end()
        name, quoted, bare = match.groups()
        if name is None:
            continue
        argument = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else bare
        directives.setdefault(name.lower(), argument)
    return directives


def format_cache_control(directives: Directives) -> str:
    """The field value for `directives`: arguments that are not tokens are sent as quoted-strings."""
    parts = []
    for name, argument in directives.items():
        if argument is None:
            parts.append(name)
        elif _TOKEN.fullmatch(argument):
            parts.append(f"{name}={argument}")
        else:
            escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{name}="{escaped}"')
    return ", ".join(parts)


def delta_seconds(directives: Directives, name: str) -> int | None:
    """A directive's delta-seconds (§1.2.2): None when absent; 0 when unreadable, so the response is stale."""
    if name not in directives:
        return None
    argument = directives[name]
    if argument is None or not argument.isascii() or not argument.isdigit():
        return 0
    return min(int(argument), _DELTA_MAX)
