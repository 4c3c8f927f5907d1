"""The ASGI type aliases every middleware here speaks (Starlette's, so apps and middlewares mix freely)."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]
