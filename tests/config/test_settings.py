"""Settings come from GATEWAY_* variables and .env; a bad value names the variable that set it."""

from pathlib import Path

import pytest

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray GATEWAY_* variables, and a working directory whose .env the test controls."""
    import os

    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers, settings.redis_url) == ("127.0.0.1", 8080, 1, None)
    assert (settings.timeout.connect, settings.timeout.read, settings.timeout.pool) == (2.0, 30.0, 5.0)


def test_environment_variables_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    monkeypatch.setenv("GATEWAY_WORKERS", "4")
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("GATEWAY_TIMEOUT__READ", "2.5")
    monkeypatch.setenv("GATEWAY_ROUTES_FILE", "/etc/gateway/routes.yaml")
    settings = load_settings()
    assert (settings.port, settings.workers, settings.timeout.read) == (9000, 4, 2.5)
    assert str(settings.redis_url) == "redis://127.0.0.1:6379/2"
    assert settings.routes_file == Path("/etc/gateway/routes.yaml")


def test_dotenv_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEWAY_PORT=7000\nGATEWAY_LOG_LEVEL=debug\nOTHER_TOOL=1\n")
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "warning")
    settings = load_settings()
    assert (settings.port, settings.log_level) == (7000, "warning")


def test_empty_redis_url_means_the_in_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "")
    assert load_settings().redis_url is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GATEWAY_PORT", "eighty", "environment: GATEWAY_PORT: Input should be a valid integer"),
        ("GATEWAY_PORT", "70000", "environment: GATEWAY_PORT: Input should be less than or equal to 65535"),
        ("GATEWAY_WORKERS", "0", "environment: GATEWAY_WORKERS: Input should be greater than or equal to 1"),
        ("GATEWAY_TIMEOUT__CONNECT", "-1", "environment: GATEWAY_TIMEOUT__CONNECT: Input should be greater than 0"),
        ("GATEWAY_REDIS_URL", "http://x", "environment: GATEWAY_REDIS_URL: URL scheme should be 'redis' or 'rediss'"),
        ("GATEWAY_LOG_LEVEL", "loud", "environment: GATEWAY_LOG_LEVEL: Input should be 'critical', 'error'"),
        ("GATEWAY_ADMIN_PREFIX", "admin/", "environment: GATEWAY_ADMIN_PREFIX: must start with '/'"),
        (
            "GATEWAY_OTEL__HEADERS",
            "{not json",
            'environment: GATEWAY_OTEL__HEADERS: must be a JSON object of strings, like {"key": "value"} (Expecting',
        ),
        (
            "GATEWAY_OTEL__RESOURCE_ATTRIBUTES",
            '{"replicas": 3}',
            "environment: GATEWAY_OTEL__RESOURCE_ATTRIBUTES: must be a JSON object of strings",
        ),
        ("GATEWAY_OTEL", "{not json", "environment: GATEWAY_OTEL: Input should be a valid dictionary"),
    ],
    ids=["port", "port-range", "workers", "timeout", "redis", "log-level", "admin", "json", "json-types", "group"],
)
def test_bad_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(message)
    assert repr(value) in str(caught.value)


def test_json_variables_and_nested_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_OTEL__HEADERS", '{"x-key": "a"}')
    monkeypatch.setenv("GATEWAY_OTEL__RESOURCE_ATTRIBUTES__TEAM", "core")
    otel = load_settings().otel
    assert (otel.headers, otel.resource_attributes) == ({"x-key": "a"}, {"team": "core"})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
