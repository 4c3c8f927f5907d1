"""Active health checks of a pool's targets, in the background of every worker of every replica.

Each round GETs the check path on every target at once, over the target's own connection pool but outside
the request metrics and spans; a 2xx within the timeout passes. Rounds are jittered so the workers of a
fleet do not check in step.
"""

import asyncio
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from asgi_gateway.config.pools import HealthCheckSpec
from asgi_gateway.gateway.upstreams import Transport, UpstreamError

if TYPE_CHECKING:
    from asgi_gateway.gateway.pool import Target

JITTER = 0.15  # each interval drawn within this fraction of the configured one


class Checked(Protocol):
    def probes(self) -> Iterable[tuple["Target", Transport]]: ...

    def checked(self, target: "Target", passed: bool) -> None: ...


class HealthChecker:
    def __init__(self, spec: HealthCheckSpec, pool: Checked) -> None:
        self.spec = spec
        self._pool = pool

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, self.spec.interval))  # workers started together spread out
        while True:
            await self.check_all()
            await asyncio.sleep(self.spec.interval * random.uniform(1 - JITTER, 1 + JITTER))

    async def check_all(self) -> None:
        probes = list(self._pool.probes())
        results = await asyncio.gather(*(self._passes(target, transport) for target, transport in probes))
        for (target, _), passed in zip(probes, results, strict=True):
            self._pool.checked(target, passed)

    async def _passes(self, target: "Target", transport: Transport) -> bool:
        try:
            async with asyncio.timeout(self.spec.timeout):
                response = await transport.send("GET", target.url + self.spec.path, [("host", target.host)], b"")
                try:
                    await response.read()
                finally:
                    await response.close()
        except (UpstreamError, TimeoutError):
            return False
        return 200 <= response.status < 300
