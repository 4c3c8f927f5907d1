"""Sticky bucketing shared with flagd's `fractional` operator, so a user lands in the same bucket here and there.

The algorithm (flagd core/pkg/evaluator/fractional.go, and open-feature/flagd-evaluator's Rust port that the
OpenFeature flagd providers embed; the testbed tags it `fractional-v2`):

1. The bucketing key is a string; by default the flag key immediately followed by the targeting key
   (`"new-profile" + "u-42"`), so two flags at 10% do not pick the same tenth of users.
2. `h` = MurmurHash3 x86 32-bit of its UTF-8 bytes, seed 0, read as an unsigned integer. A lone surrogate
   (`"\\ud800"`, which JSON and Python strings allow) is encoded as its three surrogate bytes
   (`surrogatepass`), so every string has a bucket and valid UTF-8 keys keep theirs.
3. With integer weights `w1..wn` (each >= 0, negative ones count as 0, sum `W` between 1 and 2**31 - 1),
   `bucket = (h * W) >> 32`, an integer in `[0, W)`.
4. The first variant whose running sum of weights exceeds `bucket` wins.

Weights are relative and only the ratio matters: `h * W >> 32 < k` holds exactly when `h / 2**32 < k / W`, so
a 10% rollout written as weights (10, 90) or (10_000, 90_000) picks the same users. The earlier flagd
algorithm (`|int32(h)| / (2**31 - 1) * 100`, testbed tag `fractional-v1`) assigns differently and cannot go
below 1%; it is not implemented. Python's `hash()` is never used: it is salted per process.
"""

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Generic, TypeVar

import mmh3

V = TypeVar("V")

MAX_TOTAL_WEIGHT = 2**31 - 1  # flagd's limit, so the 64-bit product fits a signed long in every SDK
ROLLOUT_SCALE = 1000  # rollout percentages keep three decimals: 0.001% of users is the finest step
ROLLOUT_TOTAL = 100 * ROLLOUT_SCALE


def bucket(bucketing_key: str, total_weight: int) -> int:
    """Where `bucketing_key` falls in `[0, total_weight)`: flagd's `(murmur3_32(key) * W) >> 32`."""
    # mmh3 must be given bytes: handed a str holding a lone surrogate, it crashes the process
    key = bucketing_key.encode("utf-8", "surrogatepass")
    return (mmh3.hash(key, signed=False) * total_weight) >> 32


class Weighted(Generic[V]):
    """Entries with integer weights, in order; `pick(key)` is flagd's choice among them for that key."""

    __slots__ = ("_bounds", "_entries", "_total")

    def __init__(self, entries: Sequence[tuple[V, int]]) -> None:
        self._entries = [entry for entry, _ in entries]
        self._bounds = list(accumulate(max(weight, 0) for _, weight in entries))
        self._total = self._bounds[-1] if self._bounds else 0
        if not 0 < self._total <= MAX_TOTAL_WEIGHT:
            raise ValueError(f"weights must add up to between 1 and {MAX_TOTAL_WEIGHT}, got {self._total}")

    def pick(self, bucketing_key: str) -> V:
        # the first entry whose running total exceeds the bucket; zero-weight entries are never chosen
        return self._entries[bisect_right(self._bounds, bucket(bucketing_key, self._total))]


def rollout_weight(percentage: float) -> int:
    """A rollout percentage as a weight out of ROLLOUT_TOTAL (10 -> 10_000 of 100_000)."""
    return round(percentage * ROLLOUT_SCALE)


def in_rollout(bucketing_key: str, weight: int) -> bool:
    """Whether the key is among the first `weight` of ROLLOUT_TOTAL buckets: flagd's `fractional`
    with `[["in", p], ["out", 100 - p]]` for a whole percentage `p`, and finer for fractional ones."""
    return bucket(bucketing_key, ROLLOUT_TOTAL) < weight
