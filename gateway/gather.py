"""Run independent async calls concurrently: bounded, with per-call timeouts and one overall deadline.

Every call ends with an Outcome, never an exception: `ok` with its value, `error`, `timeout` (its own
timeout, or the deadline passed before it finished), or `cancelled` (a required call failed first, or a call
it depends on failed; its error names that call). Structured concurrency: when `gather` returns, nothing it
started is still running.

    outcomes = await gather(
        [Call("user", fetch_user), Call("orders", fetch_orders, required=False, timeout=0.5)],
        max_concurrency=4,
        deadline=2.0,
    )
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypeVar

T = TypeVar("T")
Status = Literal["ok", "error", "timeout", "cancelled"]


class Call(NamedTuple, Generic[T]):
    """`run` receives the values of the calls named in `after`, which finish (successfully) first.
    (Calls and outcomes are NamedTuples rather than frozen dataclasses: several are made per request.)"""

    name: str
    run: Callable[[Mapping[str, Any]], Awaitable[T]]
    required: bool = True
    timeout: float | None = None
    after: tuple[str, ...] = ()


class Outcome(NamedTuple, Generic[T]):
    status: Status
    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _RequiredCallFailed(Exception):
    pass


async def gather(
    calls: Sequence[Call[T]],
    *,
    max_concurrency: int,
    deadline: float,
    shared_limit: asyncio.Semaphore | None = None,
) -> dict[str, Outcome[T]]:
    """Outcomes by call name, in the order of `calls`; `shared_limit` bounds calls across all gathers."""
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    finished = {name: asyncio.Event() for call in calls for name in call.after}  # the calls others wait for
    if finished:  # only a dependency can name an unknown call
        names = {call.name for call in calls}
        for call in calls:
            missing = [name for name in call.after if name not in names or name == call.name]
            if missing:
                raise ValueError(f"call {call.name!r} waits for unknown calls {missing}")
    # a route's own bound that cannot bind (no more calls than it allows) is not paid for on every call
    limits = [asyncio.Semaphore(max_concurrency)] if max_concurrency < len(calls) else []
    if shared_limit is not None:
        limits.append(shared_limit)
    outcomes: dict[str, Outcome[T]] = {}

    async def after_dependencies(call: Call[T]) -> Outcome[T]:
        for name in call.after:
            await finished[name].wait()
        failed = [name for name in call.after if not outcomes[name].ok]
        if failed:
            return Outcome("cancelled", error=f"{', '.join(failed)} failed")
        return await _attempt(call, {name: outcomes[name].value for name in call.after}, limits)

    async def run(call: Call[T]) -> None:
        try:
            outcomes[call.name] = await (after_dependencies(call) if call.after else _attempt(call, {}, limits))
        finally:
            if call.name in finished:
                finished[call.name].set()
        if call.required and not outcomes[call.name].ok:
            raise _RequiredCallFailed(call.name)

    cut_off: Outcome[T] = Outcome("timeout", error="deadline")
    try:
        async with asyncio.timeout(deadline):
            try:
                async with asyncio.TaskGroup() as group:
                    for call in calls[1:]:
                        group.create_task(run(call))
                    if calls:  # the first runs in this task, still first: one task fewer to create and schedule
                        await run(calls[0])
            except* _RequiredCallFailed as failed:
                cut_off = Outcome("cancelled", error=f"{failed.exceptions[0].args[0]} failed")
    except TimeoutError:
        pass
    return {call.name: outcomes.get(call.name, cut_off) for call in calls}


async def _attempt(call: Call[T], inputs: Mapping[str, Any], limits: Sequence[asyncio.Semaphore]) -> Outcome[T]:
    """The call's outcome once every limit has a slot for it."""
    held: list[asyncio.Semaphore] = []
    try:
        for limit in limits:
            await limit.acquire()
            held.append(limit)
        if call.timeout is None:
            return Outcome("ok", await call.run(inputs))
        async with asyncio.timeout(call.timeout):
            return Outcome("ok", await call.run(inputs))
    except TimeoutError as exc:
        return Outcome("timeout", error=str(exc) or f"no answer within {call.timeout}s")
    except Exception as exc:  # a call's failure is its outcome, never its siblings' problem
        return Outcome("error", error=str(exc) or type(exc).__name__)
    finally:
        for limit in held:
            limit.release()
