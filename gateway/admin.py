"""The admin API under `{prefix}/admin/`: present only when an admin token is configured.

Every call needs `Authorization: Bearer <token>`, compared in constant time; a missing or wrong token is a
401 and a warning in the log. Inside the prefix, anything but the endpoints below is a 404. The dashboard at
`{prefix}/ui` is for browsers, which cannot send a bearer token: it also takes the token as the password of
HTTP Basic (any user name), and its 401 asks the browser for it.
"""

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_gateway.flags.model import ORG_ATTRIBUTE, EvaluationContext
from asgi_gateway.flags.resolver import Resolver
from asgi_gateway.middleware.problem import problem_response

logger = logging.getLogger("gateway.admin")

Endpoint = Callable[[Request], Awaitable[Response]]


class PurgeFailed(Exception):
    """A purge that did not happen, with the status that says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class Admin:
    def __init__(
        self,
        token: str,
        *,
        resolver: Resolver,
        describe_routes: Callable[[], list[dict[str, Any]]],
        describe_upstreams: Callable[[], dict[str, Any]] = dict,
        reload: Callable[[], Awaitable[Mapping[str, Any]]] | None = None,
        purge: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]] | None = None,
        dashboard: Endpoint | None = None,
    ) -> None:
        if not token:
            raise ValueError("the admin API needs a non-empty token")
        self._expected = f"Bearer {token}".encode()
        self.resolver = resolver
        self.describe_routes = describe_routes
        self.describe_upstreams = describe_upstreams
        self._reload = reload
        self._purge = purge
        self._dashboard = dashboard

    def routes(self, prefix: str) -> list[Route]:
        base = f"{prefix}/admin"
        endpoints: list[tuple[str, Endpoint, str]] = [
            ("/routes", self.list_routes, "GET"),
            ("/upstreams", self.list_upstreams, "GET"),
            ("/flags", self.list_flags, "GET"),
            ("/flags/{key}/evaluate", self.evaluate_flag, "GET"),
        ]
        if self._reload is not None:
            endpoints.append(("/reload", self.reload, "POST"))
        if self._purge is not None:
            endpoints.append(("/cache/purge", self.purge, "POST"))
        routes = [Route(base + path, self._guarded(endpoint), methods=[method]) for path, endpoint, method in endpoints]
        routes.append(Route(base + "/{rest:path}", self._guarded(self.not_found), methods=None))
        if self._dashboard is not None:
            routes.append(Route(f"{prefix}/ui", self._guarded(self._dashboard, browser=True), methods=["GET"]))
        return routes

    def _guarded(self, endpoint: Endpoint, *, browser: bool = False) -> Endpoint:
        challenge = 'Basic realm="gateway", charset="UTF-8"' if browser else "Bearer"

        async def guarded(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            given = header.encode("latin-1")
            if browser and header[:6].lower() == "basic ":
                given = b"Bearer " + _basic_password(header[6:])
            if not hmac.compare_digest(given, self._expected):
                client = request.client.host if request.client else "-"
                logger.warning("admin call refused: %s %s from %s", request.method, request.url.path, client)
                return problem_response(
                    401, "A valid admin bearer token is required.", headers={"WWW-Authenticate": challenge}
                )
            return await endpoint(request)

        return guarded

    async def not_found(self, request: Request) -> Response:
        return problem_response(404, f"No admin endpoint {request.method} {request.url.path}.")

    async def list_routes(self, request: Request) -> Response:
        return JSONResponse({"routes": self.describe_routes()})

    async def list_upstreams(self, request: Request) -> Response:
        return JSONResponse({"upstreams": self.describe_upstreams()})

    async def list_flags(self, request: Request) -> Response:
        definitions = {
            key: definition.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            for key, definition in self.resolver.definitions().items()
        }
        return JSONResponse({"flags": definitions, "problems": dict(self.resolver.problems)})

    async def evaluate_flag(self, request: Request) -> Response:
        key = request.path_params["key"]
        if self.resolver.flag(key) is None:
            return problem_response(404, f"No flag '{key}'.")
        org = request.query_params.get("org")
        context = EvaluationContext(request.query_params.get("user"), {ORG_ATTRIBUTE: org} if org else {})
        resolution = self.resolver.evaluate(key, context)
        return JSONResponse(
            {
                "key": key,
                "value": _jsonable(resolution.value),
                "variant": resolution.variant,
                "reason": resolution.reason,
                "error_code": resolution.error_code,
                "error_message": resolution.error_message,
            }
        )

    async def reload(self, request: Request) -> Response:
        assert self._reload is not None
        result = await self._reload()
        return JSONResponse(dict(result), status_code=200 if result.get("ok") else 422)

    async def purge(self, request: Request) -> Response:
        assert self._purge is not None
        try:
            body = await request.json()
        except ValueError:
            return problem_response(400, "The body must be a JSON object.")
        if not isinstance(body, dict):
            return problem_response(400, "The body must be a JSON object.")
        try:
            return JSONResponse(dict(await self._purge(body)))
        except PurgeFailed as exc:
            return problem_response(exc.status, exc.detail)


def _basic_password(credentials: str) -> bytes:
    """The password of HTTP Basic credentials (RFC 7617), or nothing when they are not base64."""
    try:
        return base64.b64decode(credentials, validate=True).partition(b":")[2]
    except ValueError:
        return b""


def _jsonable(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    return value
