"""The ASGI type aliases every middleware here speaks (Starlette's, so apps and middlewares mix freely)."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Header", "Message", "RawHeaders", "Receive", "Scope", "Send"]

Header = tuple[bytes, bytes]  # a field as ASGI carries it: lower-case name, value
RawHeaders = list[Header]
