"""`WrappedTransport`: a transport around another (metrics, tracing), sharing its lifecycle."""

from asgi_gateway.gateway.upstreams import Transport

__all__ = ["WrappedTransport", "innermost"]


class WrappedTransport:
    """Starting and closing go to `inner`; a subclass wraps `send` alone, so no wrapper can forget either."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()


def innermost(transport: Transport) -> Transport:
    """The transport under every wrapper: what sends, for what the wrappers do not carry (WebSocket sessions)."""
    while isinstance(transport, WrappedTransport):
        transport = transport.inner
    return transport
