"""The image runs what the README documents, and the package exports what it says it does."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(maxsplit=1)[0], line.split(maxsplit=1)[1])
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerfile_install_and_entry_point_are_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    install = next(re.sub(r"\s+", " ", run.split("&&")[0]).strip() for run in runs if "pip install" in run)
    entry = next(args for instruction, args in dockerfile_instructions() if instruction == "ENTRYPOINT")
    assert f"$ {install}\n" in readme
    assert f"$ {' '.join(json.loads(entry))}\n" in readme


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    instructions = dict(dockerfile_instructions())
    assert instructions["USER"] not in ("root", "0")
    assert "/_gateway/health" in instructions["HEALTHCHECK"]


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "$ make test" in (ROOT / "README.md").read_text()
