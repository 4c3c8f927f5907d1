"""Pool keys of the route file: the shape the issue fixes, and mistakes reported at file, line and field."""

from pathlib import Path

import pytest

from asgi_gateway.config.pools import HashBalance, RetrySpec, TargetSpec
from asgi_gateway.config.routes import UpstreamSpec
from tests.config.test_loader import issues_of, load

POOL = """
upstreams:
  users:
    targets: ["http://10.0.0.1:9001/", {url: "http://10.0.0.2:9001", weight: 2}]
    balance: {hash: {header: X-User-Id}}
    health_check: {path: /healthz, interval: 5, timeout: 1, healthy_threshold: 2, unhealthy_threshold: 3}
    outlier_detection: {consecutive_failures: 5, ejection: 30, max_ejected_percent: 50}
    retries: {attempts: 2, on: [connect-failure, reset, 502, 503], budget_percent: 20, per_try_timeout: 2}
routes:
  - {path: /u, upstream: users}
"""


def test_the_pool_shape_loads(tmp_path: Path) -> None:
    spec = load(tmp_path, POOL).upstreams["users"]
    assert spec.target_specs == (
        TargetSpec(url="http://10.0.0.1:9001"),
        TargetSpec(url="http://10.0.0.2:9001", weight=2),
    )
    assert isinstance(spec.balance, HashBalance)
    assert spec.balance.hash.header == "X-User-Id"
    assert spec.retries == RetrySpec(attempts=2, on=("connect-failure", "reset", 502, 503), per_try_timeout=2)
    assert spec.pooled


def test_one_url_is_a_plain_upstream_unless_pool_keys_ask_for_more() -> None:
    assert not UpstreamSpec(url="http://a:1").pooled
    assert UpstreamSpec(url="http://a:1", retries=RetrySpec()).pooled
    assert UpstreamSpec(url="http://a:1").target_specs == (TargetSpec(url="http://a:1"),)


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        (
            '{url: "http://a:1", targets: ["http://b:1"]}',
            ":2: upstreams.users: give either url (one target) or targets (a pool), not both or neither",
        ),
        ('{targets: ["ftp://b"]}', ":3: upstreams.users.targets[0].url: must be an absolute"),
        ('{targets: [{url: "http://b:1", weight: 0}]}', ":3: upstreams.users.targets[0].weight: Input"),
        ('{url: "http://a:1", balance: {hash: {header: A, cookie: b}}}', "give exactly one of header, cookie, query"),
        ('{url: "http://a:1", balance: {hash: {header: "a b"}}}', "'a b' is not a valid header or cookie name"),
        ('{url: "http://a:1", balance: fastest}', ":3: upstreams.users.balance.literal['p2c','round_robin',"),
        ('{url: "http://a:1", health_check: {path: healthz}}', "health_check.path: must start with '/'"),
        ('{url: "http://a:1", retries: {on: [reset, reset]}}', "retries.on: lists a condition twice"),
        ('{url: "http://a:1", retries: {on: [404]}}', "retries.on[0]"),
        ('{url: "http://a:1", app: "m:a", dns_refresh: 5}', "an in-process app is one target"),
    ],
    ids=[
        "url-and-targets",
        "bad-target-url",
        "zero-weight",
        "two-keys",
        "bad-name",
        "unknown-balance",
        "relative-check",
        "repeated-condition",
        "4xx-retry",
        "app-with-dns",
    ],
)
def test_pool_mistakes(tmp_path: Path, upstream: str, expected: str) -> None:
    issues = issues_of(tmp_path, f"upstreams:\n  users:\n    {upstream}\nroutes:\n  - {{path: /u, upstream: users}}\n")
    assert any(expected in issue for issue in issues), issues
