"""Which target of a pool takes a request: one balancer per pool, picking among the targets available now.

A balancer is called with at least two candidates (a pool of one never asks) and must not fail: a request
that carries no hash key is balanced as p2c would.
"""

import math
import random
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import xxhash

from asgi_gateway.config.pools import Balance, HashBalance, HashKey
from asgi_gateway.gateway.headers import Field

_UNIT = float(1 << 52)


class Candidate(Protocol):
    weight: int
    in_flight: int  # requests sent and not yet answered in full
    rotation: int  # smooth weighted round robin's running weight
    seed: int  # the target's own hash seed, from its URL: stable across processes and replicas


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Candidate], url: str, headers: list[Field]) -> Candidate: ...


def _load(target: Candidate) -> float:
    return (target.in_flight + 1) / target.weight


class PowerOfTwoChoices:
    """The less loaded of two targets drawn at random by weight (Mitzenmacher; Envoy's and Traefik's default):
    nearly the spread of least_request at the cost of two draws."""

    def pick(self, candidates: Sequence[Candidate], url: str, headers: list[Field]) -> Candidate:
        count = len(candidates)
        if all(target.weight == candidates[0].weight for target in candidates):
            first_index = int(random.random() * count)  # two distinct draws, cheaper than random.sample
            second_index = int(random.random() * (count - 1))
            first = candidates[first_index]
            second = candidates[second_index + (second_index >= first_index)]
        else:
            first, second = random.choices(candidates, weights=[target.weight for target in candidates], k=2)
        # in flight per unit of weight: idle targets tie, and the weighted draw decides
        return second if second.in_flight * first.weight < first.in_flight * second.weight else first


class RoundRobin:
    """Smooth weighted round robin (nginx's): weight 2 and 1 give a, b, a, not a, a, b."""

    def pick(self, candidates: Sequence[Candidate], url: str, headers: list[Field]) -> Candidate:
        total = 0
        best = candidates[0]
        for target in candidates:
            target.rotation += target.weight
            total += target.weight
            if target.rotation > best.rotation:
                best = target
        best.rotation -= total
        return best


class LeastRequest:
    """The target with the fewest requests in flight per unit of weight; ties rotate, so idle targets share."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[Candidate], url: str, headers: list[Field]) -> Candidate:
        self._turn += 1
        start = self._turn % len(candidates)
        return min((*candidates[start:], *candidates[:start]), key=_load)


class ConsistentHash:
    """Weighted rendezvous hashing (HRW): each target scores the key with its own seed and the highest wins,
    so removing one of N targets moves only the keys it had, about 1/N of them."""

    def __init__(self, key: HashKey) -> None:
        self._header = key.header.lower() if key.header is not None else None
        self._cookie = key.cookie
        self._query = key.query
        self._fallback = PowerOfTwoChoices()

    def pick(self, candidates: Sequence[Candidate], url: str, headers: list[Field]) -> Candidate:
        key = self.key(url, headers)
        if key is None:
            return self._fallback.pick(candidates, url, headers)
        material = key.encode("utf-8", "surrogatepass")
        return max(candidates, key=lambda target: _score(material, target))

    def key(self, url: str, headers: list[Field]) -> str | None:
        if self._query is not None:
            query = urlsplit(url).query
            return next(
                (value for name, value in parse_qsl(query, keep_blank_values=True) if name == self._query), None
            )
        for name, value in headers:
            if name.lower() == self._header:
                return value
            if self._cookie is not None and name.lower() == "cookie":
                for pair in value.split(";"):
                    cookie, _, cookie_value = pair.strip().partition("=")
                    if cookie == self._cookie:
                        return cookie_value
        return None


def _score(material: bytes, target: Candidate) -> float:
    """-w / ln(u) for u uniform in (0, 1): the largest score is target i's with probability w_i / sum(w)."""
    unit = ((xxhash.xxh3_64_intdigest(material, seed=target.seed) >> 12) + 0.5) / _UNIT  # strictly inside (0, 1)
    return -target.weight / math.log(unit)


def build_balancer(balance: Balance) -> Balancer:
    if isinstance(balance, HashBalance):
        return ConsistentHash(balance.hash)
    if balance == "round_robin":
        return RoundRobin()
    if balance == "least_request":
        return LeastRequest()
    return PowerOfTwoChoices()
