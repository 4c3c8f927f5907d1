"""Route-file models of what a route does to answers: header rules, ETags, compression and caching."""

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from asgi_gateway.config.base import StrictModel, check_field_name


class HeaderOps(StrictModel):
    """Applied in this order: remove, set (replace), add (append)."""

    remove: tuple[str, ...] = ()
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)

    @field_validator("remove")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            check_field_name(name)
        return names

    @field_validator("set", "add")
    @classmethod
    def _fields(cls, fields: dict[str, str]) -> dict[str, str]:
        for name, value in fields.items():
            check_field_name(name)
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"value of {name!r} must not contain CR, LF or NUL")
        return fields


class HeadersSpec(StrictModel):
    request: HeaderOps = HeaderOps()
    response: HeaderOps = HeaderOps()


class EtagSpec(StrictModel):
    """ETags and conditional requests for a route; unset values come from GATEWAY_ETAG__*."""

    generate: bool | None = None  # an ETag for successful GET/HEAD answers that carry none
    weak: bool | None = None
    max_body_bytes: int | None = Field(default=None, gt=0)  # larger bodies stream through without one
    preconditions: Literal["auto", "gateway", "upstream"] | None = None  # who evaluates If-Match on writes


class CompressLevels(StrictModel):
    """Per coding, as its library counts levels; unset: the middleware's defaults."""

    br: int | None = Field(default=None, ge=0, le=11)
    zstd: int | None = Field(default=None, ge=1, le=22)
    gzip: int | None = Field(default=None, ge=1, le=9)


Coding = Literal["br", "zstd", "gzip"]
_MEDIA_TYPE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/(?:\*|[!#$%&'+\-.^_`|~0-9A-Za-z]+)$")  # type/sub, type/*


class CompressSpec(StrictModel):
    """Answers coded in br, zstd or gzip by the client's Accept-Encoding (middleware/compress.py)."""

    codings: tuple[Coding, ...] = ("br", "zstd", "gzip")  # offered, in this order of preference
    levels: CompressLevels = CompressLevels()
    min_size: int = Field(default=1024, ge=0)  # shorter bodies go out as they are
    skip_types: tuple[str, ...] = ()  # never coded, beside images, audio, video and compressed archives

    @field_validator("codings")
    @classmethod
    def _some_codings(cls, value: tuple[Coding, ...]) -> tuple[Coding, ...]:
        if not value:
            raise ValueError("must name at least one coding")
        if len(set(value)) != len(value):
            raise ValueError("lists a coding twice")
        return value

    @field_validator("skip_types")
    @classmethod
    def _media_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for media_type in value:
            if not _MEDIA_TYPE.match(media_type):
                raise ValueError(f"{media_type!r} is not a media type (type/subtype or type/*)")
        return value


class CacheSpec(StrictModel):
    """RFC 9111 shared caching for a route (seconds throughout)."""

    ttl: float = Field(default=0, ge=0)  # for answers cacheable by status that state no lifetime
    force: bool = False  # `ttl` overrides whatever the upstream says (never no-store/private)
    stale_while_revalidate: float = Field(default=0, ge=0)
    stale_if_error: float = Field(default=0, ge=0)
    keep: float = Field(default=0, ge=0)  # keep stale entries with validators this long, for 304 revalidation
    vary: tuple[str, ...] = ()  # request headers that always separate entries, beside the upstream's Vary
    flags_in_key: bool = True  # the route's resolved flag variants separate entries too
    query: Literal["sorted", "as-is", "drop"] = "sorted"
    ignore_params: tuple[str, ...] = ()  # query parameters left out of the key (tracking ids)
    max_object_bytes: int = Field(default=1 << 20, gt=0)
    honour_client_no_cache: bool = False  # by default clients cannot force a trip to the origin
    cache_set_cookie: bool = False
    tags_header: str | None = "Surrogate-Key"  # purge tags listed by the upstream

    @field_validator("vary")
    @classmethod
    def _vary_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            check_field_name(name)
        return names

    @model_validator(mode="after")
    def _force_needs_ttl(self) -> "CacheSpec":
        if self.force and not self.ttl:
            raise ValueError("force: true needs a ttl above 0")
        return self
