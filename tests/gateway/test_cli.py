"""`gateway check`, `gateway routes` and `gateway run`'s refusal of a bad configuration."""

import subprocess
import sys
from pathlib import Path

import pytest

from asgi_gateway.gateway.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "routes.yaml"
BROKEN = """\
upstreams:
  users: {url: "http://127.0.0.1:9001"}
routes:
  - path: /api/users/{id}
    upstream: userz
"""


def test_check_accepts_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == f"{EXAMPLE}: ok, 2 upstreams, 4 routes\n"


def test_check_reports_every_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    assert main(["check", str(EXAMPLE), str(broken)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"{broken}:5: routes[0].upstream: unknown upstream 'userz' (known: users)\n"
    assert captured.out.startswith(f"{EXAMPLE}: ok")


def test_routes_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", str(EXAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["METHODS", "HOST", "PATH", "UPSTREAM", "REWRITE"]
    assert lines[2].split() == ["GET,PUT", "*", "/api/users/{id}", "users", "/users/{id}"]


def test_run_refuses_a_bad_configuration_with_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = subprocess.run(
        [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(broken), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr == f"{broken}:5: routes[0].upstream: unknown upstream 'userz' (known: users)\n"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GATEWAY_WORKERS", "many", "Input should be a valid integer"),
        ("GATEWAY_OTEL__HEADERS", "{not json", "must be a JSON object of strings"),
        ("GATEWAY_OTEL__RESOURCE_ATTRIBUTES", "env=prod", "must be a JSON object of strings"),
    ],
)
def test_run_names_a_bad_environment_variable(tmp_path: Path, variable: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "", variable: value},
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"environment: {variable}: {message}")
