"""The header that tells upstream apps what was decided: `X-Feature-Flags: new-profile=true; pricing=b`.

Each flag appears as `key=variant` (the value's own name when no variant applies, e.g. on ERROR), joined by
"; ". Variant names are percent-encoded where they would break that syntax, so the header stays ASCII.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from asgi_gateway.flags.resolution import Resolution

_SAFE = "!#$&'()*+-./:<>?@[]^_`{|}~"  # everything printable but space, '"', '%', ',', ';', '=' and '\\'


def format_flags_header(resolutions: Mapping[str, Resolution[Any]]) -> str:
    return "; ".join(f"{key}={quote(resolution.label, safe=_SAFE)}" for key, resolution in resolutions.items())


def parse_flags_header(value: str) -> dict[str, str]:
    """What an upstream app reads back: flag key -> variant."""
    flags: dict[str, str] = {}
    for item in value.split(";"):
        key, separator, variant = item.partition("=")
        if separator and key.strip():
            flags[key.strip()] = unquote(variant.strip())
    return flags
