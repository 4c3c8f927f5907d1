"""Resolution cost per flag: `python bench/micro_flags.py` prints microseconds per `resolver.details()`.

The target (issue 5) is well under 10 µs for a flag with a handful of rules. Cases walk every rule, the
worst case for native rules; the flagd case runs JsonLogic (an `if` over `ends_with`, then `fractional`).
"""

import timeit
from collections.abc import Callable

from asgi_gateway.flags import EvaluationContext, Registry, Resolver, parse_document
from asgi_gateway.flags.sources import InMemorySource

NATIVE = {
    "type": "bool",
    "default": False,
    "rules": [
        {"users": ["u-1", "u-2", "u-3"], "value": True},
        {"orgs": ["acme", "globex"], "value": True},
        {"attribute": "plan", "in": ["pro", "enterprise"], "value": True},
        {"attribute": "app_version", "semver": ">=2.1.0", "value": True},
        {"rollout": 10, "value": True},
    ],
}
FLAGD = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": {
        "if": [
            {"ends_with": [{"var": "email"}, "@example.com"]},
            "on",
            {"fractional": [["on", 10], ["off", 90]]},
        ]
    },
}


def main() -> None:
    native_definitions = parse_document({"flags": {"new-profile": NATIVE}})
    flagd_definitions = parse_document({"flags": {"new-checkout": FLAGD}})
    registry = Registry()
    native, flagd = registry.declare([*native_definitions.values(), *flagd_definitions.values()])
    resolver = Resolver(registry, sources=[InMemorySource({**native_definitions, **flagd_definitions})])
    hooked = Resolver(registry, sources=[InMemorySource(native_definitions)], hooks=[lambda key, ctx, res: None])

    miss = EvaluationContext("u-42", {"org": "initech", "plan": "free", "app_version": "2.0.9"})
    first = EvaluationContext("u-1")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("native, 5 rules, first rule matches", lambda: resolver.details(native, first)),
        ("native, 5 rules, all walked (users, orgs, in, semver, rollout)", lambda: resolver.details(native, miss)),
        ("native, 5 rules, all walked, one evaluation hook", lambda: hooked.details(native, miss)),
        ("flagd JsonLogic, if/ends_with then fractional", lambda: resolver.details(flagd, miss)),
    ]
    for name, case in cases:
        number = 20_000
        best = min(timeit.repeat(case, number=number, repeat=5)) / number
        print(f"{best * 1e6:7.2f} µs  {name}")


if __name__ == "__main__":
    main()
