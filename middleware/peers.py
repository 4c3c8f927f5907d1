"""TrustedPeerHeaders: identity headers count only when the peer that sent them is trusted.

A client can type `X-User-Id` as easily as a proxy that verified it can. Placed outermost, where
`scope["client"]` is still the connection's peer (before any X-Forwarded-For rewriting), this drops the named
headers from every request whose peer is not listed, so what comes after reads them only from trusted proxies.
"""

import ipaddress
from collections.abc import Iterable

from asgi_gateway.middleware.types import ASGIApp, Receive, Scope, Send

__all__ = ["TrustedPeerHeaders", "TrustedPeers"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedPeers:
    """Peers as uvicorn's `forwarded_allow_ips` lists them: `*`, or addresses and networks, comma-separated
    (anything else, such as a unix socket path, is matched as written)."""

    def __init__(self, spec: str | Iterable[str]) -> None:
        items = [item.strip() for item in (spec.split(",") if isinstance(spec, str) else spec) if item.strip()]
        self.everyone = "*" in items
        self.networks: list[_Network] = []
        self.literals: set[str] = set()
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)
        self._seen: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        known = self._seen.get(host)
        if known is None:
            known = self._match(host)
            if len(self._seen) < 4096:  # remembered for the hosts a gateway sees again and again
                self._seen[host] = known
        return known

    def _match(self, host: str) -> bool:
        if host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class TrustedPeerHeaders:
    """Drops `headers` from requests whose peer is not among `trusted`.

    `forwarded`, when given, is `app` behind a layer that applies X-Forwarded-For and -Proto (uvicorn's
    ProxyHeadersMiddleware): only requests from trusted peers that carry those fields go through it, since it
    changes nothing for the others and costs every request a trust check and a pass over the headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted: str | Iterable[str],
        headers: Iterable[str],
        forwarded: ASGIApp | None = None,
    ) -> None:
        self.app, self.trusted, self.forwarded = app, TrustedPeers(trusted), forwarded
        self.names = frozenset(name.lower().encode("latin-1") for name in headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if not self.trusted.everyone and (client is None or client[0] not in self.trusted):
                names = self.names
                if any(name in names for name, _ in scope["headers"]):
                    scope["headers"] = [(name, value) for name, value in scope["headers"] if name not in names]
            elif self.forwarded is not None and any(name in _FORWARDED for name, _ in scope["headers"]):
                await self.forwarded(scope, receive, send)
                return
        await self.app(scope, receive, send)


_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
