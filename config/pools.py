"""Route-file models of an upstream pool: its targets, how requests are spread over them, how their health
is judged, and when a request is sent again to another target.

Each knob has Envoy's (or Traefik's) meaning, so users of either can read a pool without a manual.
"""

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from asgi_gateway.config.base import FIELD_NAME, Seconds, StrictModel


def origin_url(value: str) -> str:
    """scheme://host[:port][/base-path], without a trailing slash: requests' paths are appended to it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an absolute http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    try:
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    return value.rstrip("/")


OriginUrl = Annotated[str, AfterValidator(origin_url)]


class TargetSpec(StrictModel):
    url: OriginUrl
    weight: int = Field(default=1, ge=1, le=1000)  # a target of weight 2 takes twice the share of one of 1


class HashKey(StrictModel):
    """What a request is hashed by: exactly one of a header, a cookie or a query parameter."""

    header: str | None = None
    cookie: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "HashKey":
        given = [value for value in (self.header, self.cookie, self.query) if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of header, cookie, query")
        if self.query is None and not FIELD_NAME.match(given[0]):
            raise ValueError(f"{given[0]!r} is not a valid header or cookie name")
        return self


class HashBalance(StrictModel):
    """Consistent hashing: requests with the same key go to the same target while it is available."""

    hash: HashKey


# p2c: the less loaded of two targets drawn at random (by weight); least_request: the least loaded of all.
Balance = Literal["p2c", "round_robin", "least_request"] | HashBalance


class HealthCheckSpec(StrictModel):
    """Active checks: GET `path` on every target every `interval` (jittered); `unhealthy_threshold` failures in
    a row take a target out, `healthy_threshold` successes (2xx) in a row bring it back."""

    path: str
    interval: Seconds = 5.0
    timeout: Seconds = 1.0
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=3, ge=1)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value


class OutlierSpec(StrictModel):
    """Passive ejection: `consecutive_failures` failed answers (5xx or no answer) in a row take a target out for
    `ejection` seconds, longer each time it happens again; at most `max_ejected_percent` of the targets (but
    always one) are out at once."""

    consecutive_failures: int = Field(default=5, ge=1)
    ejection: Seconds = 30.0
    max_ejected_percent: int = Field(default=10, ge=0, le=100)


RetryOn = Literal["connect-failure", "reset", "timeout"] | Annotated[int, Field(ge=500, le=599)]


class RetrySpec(StrictModel):
    """Idempotent requests are sent again to another target on the listed failures, up to `attempts` more
    times; retries in flight stay within `budget_percent` of the requests in flight (three are always let
    through), so a failing pool does not get more traffic than it had."""

    attempts: int = Field(default=1, ge=0, le=10)
    on: tuple[RetryOn, ...] = ("connect-failure", "reset")
    budget_percent: float = Field(default=20.0, ge=0, le=100)
    per_try_timeout: Seconds | None = None  # until the answer's header; the read timeout still applies after

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: object) -> object:
        """YAML 1.1 reads a bare `on` key as true: `on:` is what users write, so it is taken back."""
        if isinstance(data, dict) and True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("on")
    @classmethod
    def _no_repeats(cls, value: tuple[RetryOn, ...]) -> tuple[RetryOn, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a condition twice")
        return value
