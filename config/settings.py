"""Process-level settings: `GATEWAY_*` environment variables and an optional `.env`, nested with `__`."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RedisDsn, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.errors import ConfigError, ConfigIssue, error_message

ENV_PREFIX = "GATEWAY_"
NESTED_DELIMITER = "__"

Seconds = Annotated[float, Field(gt=0)]


class TimeoutSettings(BaseModel):
    """Upstream timeouts used where a route file's upstream does not set its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: Seconds = 2.0
    read: Seconds = 30.0
    pool: Seconds = 5.0  # waiting for a free pooled connection


class Settings(BaseSettings):
    """Settings of one gateway process; routes, upstreams and flags come from the file at `routes_file`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",  # a .env shared with other tools may hold their variables too
        frozen=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    server: Literal["uvicorn", "granian"] = "uvicorn"
    routes_file: Path = Path("routes.yaml")
    redis_url: RedisDsn | None = None  # unset or empty: the in-memory store
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0)  # request bodies; 0 means no limit
    timeout: TimeoutSettings = TimeoutSettings()
    pool_size: int = Field(default=256, ge=1)  # keep-alive connections per upstream and worker
    admin_prefix: str = "/_gateway"
    forwarded_allow_ips: str = "127.0.0.1"  # peers whose X-Forwarded-* uvicorn trusts for the client address

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
        return Settings()
    except ValidationError as exc:
        issues = [
            ConfigIssue("environment", None, env_name(error["loc"]), f"{error_message(error)} (got {error['input']!r})")
            for error in exc.errors()
        ]
        raise ConfigError(issues) from None
