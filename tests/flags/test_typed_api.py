"""The typed API: what a type checker sees. `make typecheck` runs mypy --strict over this module, so every
`assert_type` here is checked statically as well as at run time."""

import subprocess
import sys
import textwrap
from enum import Enum
from pathlib import Path
from typing import assert_type

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue

from asgi_gateway.flags import EvaluationContext, Flag, FlagDefinition, Reason, Registry, Resolution, Resolver
from asgi_gateway.flags.sources import InMemorySource


class Plan(Enum):
    FREE = "free"
    PRO = "pro"


class Banner(BaseModel):
    model_config = ConfigDict(frozen=True)
    text: str
    color: str = "blue"


registry = Registry()
NEW_CHECKOUT = registry.bool("new-checkout", default=False, description="The one-page checkout")
MAX_ITEMS = registry.int("max-items", default=10)
DISCOUNT = registry.float("discount", default=0.0)
THEME = registry.str("theme", default="light")
PLAN = registry.enum("plan", Plan, default=Plan.FREE)
LIMITS = registry.json("limits", default={"rps": 10})
BANNER = registry.model("banner", Banner, default=Banner(text="hello"))

resolver = Resolver(
    registry,
    sources=[
        InMemorySource(
            [
                FlagDefinition(
                    key="new-checkout", type="bool", default=False, rules=[{"users": ["u-1"], "value": True}]
                ),
                FlagDefinition(key="plan", type="str", default="pro"),
                FlagDefinition(key="banner", type="json", default={"text": "sale", "color": "red"}),
            ]
        )
    ],
)
ctx = EvaluationContext("u-1", {"org": "acme"})


def test_resolve_returns_the_declared_type() -> None:
    assert assert_type(resolver.resolve(NEW_CHECKOUT, ctx), bool) is True
    assert assert_type(resolver.resolve(MAX_ITEMS, ctx), int) == 10
    assert assert_type(resolver.resolve(DISCOUNT, ctx), float) == 0.0
    assert assert_type(resolver.resolve(THEME, ctx), str) == "light"
    assert assert_type(resolver.resolve(PLAN, ctx), Plan) is Plan.PRO
    assert assert_type(resolver.resolve(LIMITS, ctx), JsonValue) == {"rps": 10}
    assert assert_type(resolver.resolve(BANNER, ctx), Banner) == Banner(text="sale", color="red")


def test_details_are_typed_too() -> None:
    details = assert_type(resolver.details(NEW_CHECKOUT, ctx), Resolution[bool])
    assert (details.value, details.reason, details.variant) == (True, Reason.TARGETING_MATCH, "true")


def test_a_bare_flag_takes_its_type_from_the_default() -> None:
    flag = assert_type(Flag("standalone", default=3), Flag[int])
    assert flag.kind == "int"


def test_the_registry_lists_its_flags() -> None:
    assert [flag.key for flag in registry] == [
        "new-checkout",
        "max-items",
        "discount",
        "theme",
        "plan",
        "limits",
        "banner",
    ]
    assert registry["theme"] is THEME
    assert ("theme" in registry, len(registry)) == (True, 7)


@pytest.mark.timeout(120)
def test_the_type_checker_rejects_misuse(tmp_path: Path) -> None:
    """Using a bool flag's value as a str is caught before anything runs."""
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        textwrap.dedent(
            """
            from asgi_gateway.flags import EvaluationContext, Registry, Resolver
            registry = Registry()
            NEW_CHECKOUT = registry.bool("new-checkout", default=False)
            label: str = Resolver(registry).resolve(NEW_CHECKOUT, EvaluationContext())
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(misuse)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert 'Incompatible types in assignment (expression has type "bool", variable has type "str")' in result.stdout
