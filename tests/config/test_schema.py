"""`gateway schema`: the committed schema is the generated one, and the example route file passes it."""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from asgi_gateway.config.schema import route_file_schema
from asgi_gateway.gateway.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "config" / "routes.schema.json"
EXAMPLE = ROOT / "examples" / "routes.yaml"
DEPLOYED = ROOT / "deploy" / "routes.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = route_file_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == route_file_schema()


def test_the_committed_schema_is_the_generated_one() -> None:
    assert json.loads(COMMITTED.read_text()) == route_file_schema(), "stale: run `make schema`"


@pytest.mark.parametrize("path", [EXAMPLE, DEPLOYED], ids=["example", "deploy"])
def test_route_files_name_the_committed_schema_and_pass_it(
    validator: jsonschema.Draft202012Validator, path: Path
) -> None:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# yaml-language-server: $schema=")
    assert (path.parent / first_line.partition("$schema=")[2]).resolve() == COMMITTED
    assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"routes": [{"path": "/a", "upstream": "u", "cahce": {}}]}, "'cahce' was unexpected"),
        ({"routes": [{"path": "/a", "methods": ["FETCH"]}]}, "'FETCH' is not one of"),
        ({"routes": [{"path": "/a", "cache": {"ttl": -1}}]}, "-1 is less than the minimum of 0"),
        ({"upstreams": {}}, "'routes' is a required property"),
        ({"routes": [], "flags": {"f": {"default": True}}}, "'type' is a required property"),
    ],
    ids=["unknown-key", "method", "negative-ttl", "no-routes", "flag-without-type"],
)
def test_the_schema_catches_what_an_editor_should_flag(
    validator: jsonschema.Draft202012Validator, document: dict, message: str
) -> None:
    assert any(message in text for text in messages(validator.iter_errors(document)))


def messages(errors: Iterable[jsonschema.ValidationError]) -> Iterator[str]:
    """Every message, with those of the alternatives an `anyOf` tried (an optional section is one)."""
    for error in errors:
        yield error.message
        yield from messages(error.context or ())


def test_a_flag_need_not_repeat_its_key(validator: jsonschema.Draft202012Validator) -> None:
    document = {"routes": [{"path": "/a", "upstream": "u"}], "flags": {"beta": {"type": "bool", "default": False}}}
    assert list(validator.iter_errors(document)) == []
