"""Sticky bucketing: flagd's fractional algorithm, the same in every process and every release."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flags import EvaluationContext, Flag, Reason, Registry, Resolver, parse_document
from flags.rollout import MAX_TOTAL_WEIGHT, Weighted, bucket, in_rollout, rollout_weight
from flags.sources import InMemorySource

IDS = [f"user-{n}" for n in range(100_000)]


def rollout_resolver(*percentages: float) -> tuple[Resolver, list[Flag[Any]]]:
    """One bool flag per percentage, each a bare `{rollout: p, value: true}` rule."""
    data = {
        "flags": {
            f"rollout-{i}": {"type": "bool", "default": False, "rules": [{"rollout": p, "value": True}]}
            for i, p in enumerate(percentages)
        }
    }
    definitions = parse_document(data)
    registry = Registry()
    flags = list(registry.declare(definitions.values()))
    return Resolver(registry, sources=[InMemorySource(definitions)]), flags


def test_ten_percent_of_100k_ids_lands_within_half_a_percent() -> None:
    resolver, [flag] = rollout_resolver(10)
    included = sum(resolver.resolve(flag, EvaluationContext(user)) for user in IDS)
    assert abs(included / len(IDS) - 0.10) <= 0.005


def test_the_same_id_always_lands_in_the_same_bucket() -> None:
    resolver, [flag] = rollout_resolver(50)
    first = [resolver.details(flag, EvaluationContext(user)) for user in IDS[:1000]]
    again, fresh = rollout_resolver(50)
    assert first == [resolver.details(flag, EvaluationContext(user)) for user in IDS[:1000]]
    assert first == [again.details(fresh[0], EvaluationContext(user)) for user in IDS[:1000]]


def test_buckets_agree_across_processes() -> None:
    """Another interpreter with another hash seed (so str hashes differ) computes the same buckets."""
    sample = IDS[:2000]
    script = (
        "import json, sys\n"
        "from flags.rollout import bucket\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([bucket('new-profile' + i, 100_000) for i in ids]))\n"
    )
    here = [bucket("new-profile" + user, 100_000) for user in sample]
    for seed in ("1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(sample),
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(result.stdout) == here


@pytest.mark.parametrize(
    ("bucketing_key", "total", "expected"),
    [
        ("ejOoVL", 2**32, 0),  # murmur3 hash 0: flagd testbed's hash edge cases
        ("bY9fO-", 2**32, 1),
        ("SI7p-", 2**32, 2**31 - 1),
        ("6LvT0", 2**32, 2**31),
        ("ceQdGm", 2**32, 2**32 - 1),
        ("new-profileu-1", 100, 41),
        ("pricingu-42", 100_000, 8_258),
    ],
)
def test_buckets_are_pinned(bucketing_key: str, total: int, expected: int) -> None:
    """A release that moved users between buckets would fail here."""
    assert bucket(bucketing_key, total) == expected


def test_raising_a_rollout_keeps_everyone_already_in() -> None:
    ten = {user for user in IDS[:20_000] if in_rollout("f" + user, rollout_weight(10))}
    twenty = {user for user in IDS[:20_000] if in_rollout("f" + user, rollout_weight(20))}
    assert ten < twenty


def test_flags_at_the_same_percentage_pick_different_users() -> None:
    resolver, flags = rollout_resolver(10, 10)
    both = sum(all(resolver.resolve(flag, EvaluationContext(user)) for flag in flags) for user in IDS[:20_000])
    assert both < 400  # independent picks overlap on about 1% (200), the same pick on 10% (2000)


def test_fractional_percentages() -> None:
    resolver, [flag] = rollout_resolver(0.5)
    included = sum(resolver.resolve(flag, EvaluationContext(user)) for user in IDS)
    assert abs(included / len(IDS) - 0.005) <= 0.001


def test_variant_weights() -> None:
    data = {
        "flags": {
            "pricing": {
                "type": "str",
                "default_variant": "a",
                "variants": {"a": "A", "b": "B", "c": "C"},
                "split": {"a": 20, "b": 30, "c": 50},
            }
        }
    }
    definitions = parse_document(data)
    registry = Registry()
    [flag] = registry.declare(definitions.values())
    resolver = Resolver(registry, sources=[InMemorySource(definitions)])
    resolutions = [resolver.details(flag, EvaluationContext(user)) for user in IDS]
    assert {r.reason for r in resolutions} == {Reason.SPLIT}
    counts = Counter(r.variant for r in resolutions)
    for variant, share in {"a": 0.2, "b": 0.3, "c": 0.5}.items():
        assert abs(counts[variant] / len(IDS) - share) <= 0.01


def test_zero_weights_are_never_picked() -> None:
    weighted = Weighted([("never", 0), ("always", 3), ("also-never", 0)])
    assert {weighted.pick(user) for user in IDS[:1000]} == {"always"}


@pytest.mark.parametrize("weights", [[0, 0], [], [MAX_TOTAL_WEIGHT, 1]], ids=["zero", "empty", "too-much"])
def test_weights_must_add_up_to_something_reasonable(weights: list[int]) -> None:
    with pytest.raises(ValueError, match="weights must add up to between 1 and 2147483647"):
        Weighted([(str(i), w) for i, w in enumerate(weights)])
