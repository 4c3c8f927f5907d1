"""RFC 9457 problem details: the one shape every error the gateway itself produces takes."""

import time
from collections.abc import Mapping
from http import HTTPStatus

from starlette.responses import JSONResponse

from asgi_gateway.middleware.httpdates import format_http_timestamp

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: object,
) -> JSONResponse:
    """A problem+json response; `title` defaults to the status phrase, extensions become extra members."""
    body: dict[str, object] = {"type": "about:blank", "title": title or HTTPStatus(status).phrase, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update(extensions)
    response = JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
    response.headers.setdefault("date", format_http_timestamp(time.time()))
    return response
