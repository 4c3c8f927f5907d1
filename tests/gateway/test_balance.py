"""Balancers on plain candidates: weights honoured, idle targets preferred, hashing consistent."""

import random
from collections import Counter
from dataclasses import dataclass

import pytest
import xxhash

from asgi_gateway.config.pools import HashKey
from asgi_gateway.gateway.balance import (
    Balancer,
    Candidate,
    ConsistentHash,
    LeastRequest,
    PowerOfTwoChoices,
    RoundRobin,
)


@dataclass(eq=False)
class Node:
    name: str
    weight: int = 1
    in_flight: int = 0
    rotation: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        self.seed = xxhash.xxh3_64_intdigest(self.name.encode())


def names(balancer: Balancer, nodes: list[Node], count: int, **request: str) -> Counter[str]:
    picks: list[Candidate] = [balancer.pick(nodes, request.get("url", "/"), []) for _ in range(count)]
    return Counter(pick.name for pick in picks if isinstance(pick, Node))


def test_round_robin_is_smooth_and_weighted() -> None:
    nodes = [Node("a", 2), Node("b"), Node("c")]
    picks = [RoundRobin().pick(nodes, "/", []) for _ in range(8)]
    assert [pick.name for pick in picks if isinstance(pick, Node)] == ["a", "b", "c", "a"] * 2


def test_power_of_two_choices_honours_weights_and_avoids_the_busy() -> None:
    random.seed(7)
    nodes = [Node("a"), Node("b", 2), Node("c")]
    spread = names(PowerOfTwoChoices(), nodes, 4000)
    assert 1.6 < spread["b"] / spread["a"] < 2.6
    nodes[1].weight, nodes[1].in_flight = 1, 50
    assert names(PowerOfTwoChoices(), nodes, 200)["b"] == 0  # two distinct draws: the busy one always loses


def test_least_request_prefers_idle_targets_and_shares_ties() -> None:
    nodes = [Node("a", in_flight=3), Node("b"), Node("c", in_flight=1)]
    assert names(LeastRequest(), nodes, 3) == {"b": 3}
    nodes[0].in_flight = nodes[2].in_flight = 0
    assert names(LeastRequest(), nodes, 30) == {"a": 10, "b": 10, "c": 10}
    nodes[1].weight = 4
    nodes[1].in_flight = 2  # (2 + 1) / 4 below (0 + 1) / 1: weight counts
    assert names(LeastRequest(), nodes, 3) == {"b": 3}


def keyed(balancer: ConsistentHash, nodes: list[Node], keys: range) -> dict[int, str]:
    chosen = {}
    for key in keys:
        pick = balancer.pick(nodes, "/", [("x-user-id", str(key))])
        assert isinstance(pick, Node)
        chosen[key] = pick.name
    return chosen


def test_consistent_hash_moves_only_the_removed_targets_keys() -> None:
    balancer = ConsistentHash(HashKey(header="X-User-Id"))
    nodes = [Node(f"t{index}") for index in range(5)]
    before = keyed(balancer, nodes, range(5000))
    after = keyed(balancer, nodes[:2] + nodes[3:], range(5000))
    moved = [key for key in before if before[key] != after[key]]
    assert all(before[key] == "t2" for key in moved)
    assert 0.16 < len(moved) / 5000 < 0.24  # about 1/5


def test_consistent_hash_weights_and_key_sources() -> None:
    nodes = [Node("a"), Node("b", 3)]
    spread = Counter(keyed(ConsistentHash(HashKey(header="X-User-Id")), nodes, range(4000)).values())
    assert 2.5 < spread["b"] / spread["a"] < 3.6
    by_cookie = ConsistentHash(HashKey(cookie="session"))
    by_query = ConsistentHash(HashKey(query="id"))
    same = {
        by_cookie.pick(nodes, "/", [("cookie", f"theme=dark; session={key}")]).seed
        == by_query.pick(nodes, f"/x?a=1&id={key}", []).seed
        for key in range(200)
    }
    assert same == {True}  # the same key hashes alike, wherever it came from
    assert by_cookie.key("/", [("cookie", "theme=dark")]) is None
    assert by_query.key("/x?a=1", []) is None


@pytest.mark.parametrize("key", [HashKey(header="X-User-Id"), HashKey(query="id")], ids=["header", "query"])
def test_a_request_without_its_hash_key_is_balanced_anyway(key: HashKey) -> None:
    random.seed(3)
    assert set(names(ConsistentHash(key), [Node("a"), Node("b")], 50)) == {"a", "b"}
