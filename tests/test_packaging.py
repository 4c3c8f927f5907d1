"""The image runs what the README documents, and the package exports what it says it does."""

import json
import re
from pathlib import Path

from pydantic import BaseModel

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


def test_every_setting_is_documented_in_the_readme() -> None:
    from asgi_gateway.config.settings import ENV_PREFIX, NESTED_DELIMITER, Settings

    readme = (ROOT / "README.md").read_text()

    def variables(model: type[BaseModel], prefix: str) -> list[str]:
        names: list[str] = []
        for name, field in model.model_fields.items():
            nested = field.annotation
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                names += variables(nested, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
            else:
                names.append(prefix + name.upper())
        return names

    undocumented = [
        name
        for name in variables(Settings, ENV_PREFIX)
        if name not in readme and f"__{name.rsplit('__', 1)[-1]}`" not in readme
    ]
    assert undocumented == []


def test_the_readme_route_file_example_is_valid(tmp_path: Path) -> None:
    from asgi_gateway.config.loader import load_route_file

    readme = (ROOT / "README.md").read_text()
    example = next(block for block in readme.split("```yaml\n")[1:] if block.startswith("upstreams:"))
    path = tmp_path / "routes.yaml"
    path.write_text(example.split("```")[0])
    routes = load_route_file(path, environ={})
    assert [route.path for route in routes.routes] == ["/api/users/{id}", "/static/{rest:path}", "/api/dashboard/{id}"]
