"""Semantic versions the way flagd's `sem_ver` reads them (Go's golang.org/x/mod/semver, SemVer 2.0.0 §11).

A leading "v" or "V" is optional (flagd-evaluator strips either); "1" and "1.2" are shorthands for "1.0.0" and
"1.2.0"; build metadata is ignored when comparing; a pre-release sorts before its release. "2.0.0.0" or
"01.2.3" are not versions.
"""

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

_NUMBER = r"0|[1-9][0-9]*"
_IDENTIFIERS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_VERSION = re.compile(
    rf"[vV]?(?P<major>{_NUMBER})(?:\.(?P<minor>{_NUMBER})"
    rf"(?:\.(?P<patch>{_NUMBER})(?:-(?P<pre>{_IDENTIFIERS}))?(?:\+{_IDENTIFIERS})?)?)?"
)


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """Fields are in SemVer precedence order (§11), so the generated comparisons are the right ones."""

    major: int
    minor: int
    patch: int
    is_release: bool  # a release sorts after its pre-releases
    pre: tuple[tuple[int, int | str], ...]  # numeric identifiers (0, n) sort before alphanumeric ones (1, s)


@lru_cache(maxsize=4096)  # the same few app versions arrive over and over
def parse_version(text: str) -> Version | None:
    """The version `text` names, or None when it is not one."""
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    pre: list[tuple[int, int | str]] = []
    for identifier in match["pre"].split(".") if match["pre"] else ():
        if identifier.isdigit():
            if len(identifier) > 1 and identifier.startswith("0"):
                return None  # numeric identifiers must not have leading zeros (§9)
            pre.append((0, int(identifier)))
        else:
            pre.append((1, identifier))
    return Version(int(match["major"]), int(match["minor"] or 0), int(match["patch"] or 0), not pre, tuple(pre))


def version_of(value: object) -> Version | None:
    """The version a context value names: a string, or a number read as its text the way flagd-evaluator
    does (1 -> "1" -> 1.0.0, 1.2 -> 1.2.0), since a context often carries `"app_version": 2`. A bool is no
    number here."""
    if type(value) is int or type(value) is float:
        value = str(value)
    return parse_version(value) if isinstance(value, str) else None


Comparison = Callable[[Version, Version], bool]

COMPARISONS: dict[str, Comparison] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "^": lambda a, b: a.major == b.major,  # same major version
    "~": lambda a, b: (a.major, a.minor) == (b.major, b.minor),  # same major.minor
}


def parse_condition(text: str) -> tuple[Comparison, Version] | None:
    """A rule's version test, an operator then a version: ">=2.1.0", "^2", "~2.1"."""
    symbol = next((op for op in sorted(COMPARISONS, key=len, reverse=True) if text.startswith(op)), None)
    version = parse_version(text[len(symbol) :].strip()) if symbol is not None else None
    return (COMPARISONS[symbol], version) if symbol is not None and version is not None else None
