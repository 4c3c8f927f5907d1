"""Process-level settings: `GATEWAY_*` environment variables and an optional `.env`, nested with `__`."""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RedisDsn,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from asgi_gateway.config.errors import ConfigError, ConfigIssue, error_message

ENV_PREFIX = "GATEWAY_"
# prometheus-client's own variable: where several worker processes keep their counts (set by `gateway run`)
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
NESTED_DELIMITER = "__"

Seconds = Annotated[float, Field(gt=0)]


_STRING_MAP = 'must be a JSON object of strings, like {"key": "value"}'


def _json_object_of_strings(value: object) -> object:
    """A variable's JSON text, read here: pydantic-settings' own reading reports a bad one as a traceback that
    names only the group (`otel`), not the variable."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{_STRING_MAP} ({exc})") from None
    if not isinstance(parsed, dict) or not all(isinstance(item, str) for item in parsed.values()):
        raise ValueError(_STRING_MAP)
    return parsed


StringMap = Annotated[dict[str, str], BeforeValidator(_json_object_of_strings)]  # a JSON object in a variable


class TimeoutSettings(BaseModel):
    """Upstream timeouts used where a route file's upstream does not set its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: Seconds = 2.0
    read: Seconds = 30.0
    pool: Seconds = 5.0  # waiting for a free pooled connection


class OtelSettings(BaseModel):
    """Tracing export. The standard OTEL_* variables override these (see `apply_otel_environment`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "console", "otlp"] = "none"  # none: no spans, no overhead
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    endpoint: str | None = None  # base URL as OTEL_EXPORTER_OTLP_ENDPOINT; unset: the exporter's default
    traces_endpoint: str | None = None  # full URL as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as is
    headers: StringMap = {}
    service_name: str = "gateway"
    resource_attributes: StringMap = {}
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)  # of new traces; a parent's decision is kept


class EtagSettings(BaseModel):
    """Conditional requests for routes that do not say otherwise (their `etag:` overrides each value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False  # opt-in: hashing bodies costs CPU; fan-out routes have it on regardless
    generate: bool = True
    weak: bool = False
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    preconditions: Literal["auto", "gateway", "upstream"] = "auto"


class CacheSettings(BaseModel):
    """Where cached answers live: memory only, or Redis (GATEWAY_REDIS_URL) behind a small memory tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_bytes: int = Field(default=64 << 20, gt=0)  # the in-memory store, when there is no Redis
    l1_bytes: int = Field(default=16 << 20, ge=0)  # hot entries in front of Redis; 0: every hit asks Redis
    l1_ttl: float = Field(default=1.0, gt=0)  # how long replicas may disagree after a change
    redis_prefix: str = "cache:"
    redis_timeout: float = Field(default=0.25, gt=0)  # slower than this, Redis is stepped around
    redis_max_connections: int = Field(default=64, gt=0)  # per replica; a burst waits for one of them


class FlagSettings(BaseModel):
    """Where the evaluation context comes from, where the decision goes, and where live definitions live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_header: str = "X-User-Id"  # the targeting key
    org_header: str = "X-Org-Id"  # the `org` attribute
    forward_header: str = "X-Feature-Flags"  # resolved flags for the upstream; a client's is always replaced
    redis_prefix: str = "flags:"  # live definitions in Redis, when GATEWAY_REDIS_URL is set


class RateLimitSettings(BaseModel):
    """Where routes' `rate_limit:` counts live: this process's memory, or Redis when GATEWAY_REDIS_URL is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_prefix: str = Field(default="ratelimit:", pattern=r"^[^{}]*$")  # the client key after it is the hash tag


class Settings(BaseSettings):
    """Settings of one gateway process; routes, upstreams and flags come from the file at `routes_file`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",  # a .env shared with other tools may hold their variables too
        frozen=True,
        enable_decoding=False,  # JSON values are read by their fields' validators, so errors name the variable
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    server: Literal["uvicorn", "granian"] = "uvicorn"
    routes_file: Path = Path("routes.yaml")
    watch_routes: bool = True  # reload the route file when it changes (and on SIGHUP)
    redis_url: RedisDsn | None = None  # unset or empty: the in-memory store
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0)  # request bodies; 0 means no limit
    timeout: TimeoutSettings = TimeoutSettings()
    pool_size: int = Field(default=256, ge=1)  # keep-alive connections per upstream and worker
    fanout_max_in_flight: int = Field(default=256, ge=1)  # fan-out calls at once per worker, all routes together
    admin_prefix: str = "/_gateway"
    admin_token: SecretStr | None = None  # enables the admin API under {admin_prefix}/admin/
    access_log: Literal["json", "text", "off"] = "json"  # one line per request on stdout
    request_id_header: str = "X-Request-ID"
    flags: FlagSettings = FlagSettings()
    etag: EtagSettings = EtagSettings()
    cache: CacheSettings = CacheSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    otel: OtelSettings = OtelSettings()
    shutdown_grace: int = Field(default=30, ge=1)  # seconds requests in flight may take to finish after SIGTERM
    # Peers whose X-Forwarded-* set the client address, and the only peers whose identity headers (flags'
    # user/org headers) count on routes without `auth:`; from any other peer those headers are dropped.
    forwarded_allow_ips: str = "127.0.0.1"

    @field_validator("admin_prefix")
    @classmethod
    def _absolute_prefix(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or "{" in value:
            raise ValueError("must start with '/', not end with '/' and hold no '{' (for example /_gateway)")
        return value


def env_name(loc: tuple[int | str, ...]) -> str:
    """The variable that sets a field: ('timeout', 'read') -> GATEWAY_TIMEOUT__READ."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part) for part in loc).upper()


def load_settings() -> Settings:
    """Read the environment (and `.env`); every invalid variable becomes one ConfigIssue naming it."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError([_environment_issue(env_name(error["loc"]), error) for error in exc.errors()]) from None
    return settings.model_copy(update={"otel": apply_otel_environment(settings.otel, os.environ)})


def _environment_issue(variable: str, error: ErrorDetails) -> ConfigIssue:
    return ConfigIssue("environment", None, variable, f"{error_message(error)} (got {error['input']!r})")


# Standard OpenTelemetry variables, most specific first, and the OtelSettings field each sets.
_OTEL_VARIABLES: dict[str, tuple[str, ...]] = {
    "exporter": ("OTEL_TRACES_EXPORTER",),
    "protocol": ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    "endpoint": ("OTEL_EXPORTER_OTLP_ENDPOINT",),
    "traces_endpoint": ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",),
    "headers": ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
    "service_name": ("OTEL_SERVICE_NAME",),
    "resource_attributes": ("OTEL_RESOURCE_ATTRIBUTES",),
    "sample_ratio": ("OTEL_TRACES_SAMPLER_ARG",),
}
_FIXED_RATIO_SAMPLERS = {
    "always_on": 1.0,
    "parentbased_always_on": 1.0,
    "always_off": 0.0,
    "parentbased_always_off": 0.0,
}


def apply_otel_environment(otel: OtelSettings, environ: Mapping[str, str]) -> OtelSettings:
    """Where a standard OTEL_* variable is set, it wins over GATEWAY_OTEL__*; bad values name the variable."""
    values: dict[str, object] = otel.model_dump()
    source: dict[str, str] = {}
    for field, names in _OTEL_VARIABLES.items():
        name = next((name for name in names if environ.get(name)), None)
        if name is None:
            continue
        raw = environ[name].strip()
        source[field] = name
        if field == "exporter":
            values[field] = raw.split(",")[0].strip()  # the first of a list; the gateway exports to one
        elif field == "headers":
            values[field] = _key_values(raw)
        elif field == "resource_attributes":
            values[field] = {**otel.resource_attributes, **_key_values(raw)}  # merged, the variable wins per key
        else:
            values[field] = raw
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip()
    if sampler in _FIXED_RATIO_SAMPLERS:
        values["sample_ratio"], source["sample_ratio"] = _FIXED_RATIO_SAMPLERS[sampler], "OTEL_TRACES_SAMPLER"
    try:
        return OtelSettings.model_validate(values)
    except ValidationError as exc:
        issues = [
            _environment_issue(source.get(str(error["loc"][0]), env_name(("otel", *error["loc"]))), error)
            for error in exc.errors()
        ]
        raise ConfigError(issues) from None


def _key_values(text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoded values: the W3C Baggage-like format of OTEL_*_HEADERS and attributes."""
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {unquote(key.strip()): unquote(value.strip()) for key, value in pairs}
