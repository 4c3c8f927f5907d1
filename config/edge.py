"""A route's edge policies: who may call (`auth:`), how often (`rate_limit:`), from which origins (`cors:`).

An API keys file is read when the route file is loaded, relative to the route file's folder (the loader
passes it as the validation context `base_dir`); only SHA-256 digests of keys are ever held. A keys file has
one key a line, `#` starting a comment:

    <sha256 hex of the key>  <user id>  [org=<org id>]  [scope=<scope>,<scope>...]
"""

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from asgi_gateway.config.base import StrictModel, check_field_name

Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_IDENTITY = re.compile(r"^[\x21-\x7e\xa0-\xff]+$")  # one visible latin-1 word: it travels in a header


class JwtSpec(StrictModel):
    """Bearer JWTs signed by a key of the issuer's JWKS. Only asymmetric algorithms can be listed."""

    jwks_url: str
    issuer: str
    audience: str | tuple[str, ...]
    algorithms: tuple[Algorithm, ...] = ("RS256",)
    leeway: float = Field(default=0, ge=0)  # seconds of clock skew allowed on exp/nbf/iat
    user_claim: str = "sub"
    org_claim: str | None = None
    jwks_max_age: float = Field(default=300, gt=0)  # seconds the key set is kept before it is fetched again
    jwks_min_refresh: float = Field(default=10, ge=0)  # at most one early fetch (unknown kid) this often

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an absolute http:// or https:// URL, got {value!r}")
        return value

    @field_validator("algorithms")
    @classmethod
    def _some(cls, value: tuple[Algorithm, ...]) -> tuple[Algorithm, ...]:
        if not value:
            raise ValueError("must list at least one algorithm")
        return value


class ApiKeyEntry(StrictModel):
    sha256: str
    user: str
    org: str | None = None
    scopes: tuple[str, ...] = ()

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _DIGEST.match(value.lower()):
            raise ValueError("must be the 64 hex digits of the key's SHA-256, never the key itself")
        return value.lower()

    @field_validator("user", "org")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTITY.match(value):
            raise ValueError(f"must be one word of visible characters, got {value!r}")
        return value


class ApiKeySpec(StrictModel):
    """Keys sent in `header`, listed by digest in `keys_file` (read at load time) and/or inline in `keys`."""

    header: str = "X-API-Key"
    keys_file: Path | None = None
    keys: tuple[ApiKeyEntry, ...] = ()

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        return check_field_name(value)

    @model_validator(mode="before")
    @classmethod
    def _read_keys_file(cls, data: object, info: ValidationInfo) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("keys_file"), str):
            return data
        base = (info.context or {}).get("base_dir", Path())
        path = Path(base) / data["keys_file"]
        return {**data, "keys": [*data.get("keys", []), *read_keys_file(path)]}

    @model_validator(mode="after")
    def _some_keys(self) -> "ApiKeySpec":
        if not self.keys:
            raise ValueError("lists no keys (give keys_file or keys)")
        digests = [entry.sha256 for entry in self.keys]
        if len(set(digests)) != len(digests):
            raise ValueError("lists a key digest twice")
        return self


def read_keys_file(path: Path) -> list[ApiKeyEntry]:
    """Every line of a keys file as an entry; a bad line raises ValueError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read keys file {path}: {exc}") from None
    entries: list[ApiKeyEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.partition("#")[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise ValueError(f"{path}:{number}: expected '<sha256 hex> <user> [org=...] [scope=...]'")
        fields: dict[str, object] = {"sha256": words[0], "user": words[1]}
        for word in words[2:]:
            name, _, value = word.partition("=")
            if name == "org" and value:
                fields["org"] = value
            elif name == "scope" and value:
                fields["scopes"] = tuple(filter(None, value.split(",")))
            else:
                raise ValueError(f"{path}:{number}: unknown field {word!r} (org=... or scope=...)")
        try:
            entries.append(ApiKeyEntry.model_validate(fields))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {_first_message(exc)}") from None
    return entries


def _first_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        error = errors()[0]
        return f"{error['loc'][0]}: {error['msg'].removeprefix('Value error, ')}"
    return str(exc)


class RequireSpec(StrictModel):
    scope: tuple[str, ...] = ()  # every one of these, or 403


class AuthSpec(StrictModel):
    """Credentials a route requires: a JWT, an API key, or either (the JWT is tried first)."""

    jwt: JwtSpec | None = None
    api_key: ApiKeySpec | None = None
    require: RequireSpec = RequireSpec()

    @model_validator(mode="after")
    def _some_verifier(self) -> "AuthSpec":
        if self.jwt is None and self.api_key is None:
            raise ValueError("needs jwt, api_key or both")
        return self


RateLimitKey = Annotated[str, Field(pattern=r"^(ip|user|api_key|header:[!#$%&'*+\-.^_`|~0-9A-Za-z]+)$")]


class RateLimitSpec(StrictModel):
    """`requests` per `per` seconds for each client, `burst` of them at once (default: all of them)."""

    requests: int = Field(gt=0)
    per: float = Field(gt=0)
    key: RateLimitKey = "ip"  # ip | user | api_key | header:NAME; without one, a request counts by its ip
    burst: int | None = Field(default=None, gt=0)


class CorsSpec(StrictModel):
    """Cross-origin access; preflights are answered at the gateway and never reach the upstream."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] | None = None  # default: the route's methods
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int = Field(default=600, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one origin (or '*')")
        for origin in value:
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com (or '*')")
        return value

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name != "*":
                check_field_name(name)
        return value


def rate_limit_key_issue(auth: AuthSpec | None, rate_limit: RateLimitSpec | None) -> str | None:
    """A key only authentication can give, on a route without it, would count every client by ip."""
    if rate_limit is None:
        return None
    if rate_limit.key == "user" and auth is None:
        return "key: user needs auth: on the route"
    if rate_limit.key == "api_key" and (auth is None or auth.api_key is None):
        return "key: api_key needs auth: {api_key: ...} on the route"
    return None
