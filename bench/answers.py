"""What each path must answer, checked before anything is measured: a fast wrong answer measures nothing.

`expect` names the kind of answer: the origin's document (`document`), that document from the gateway's cache
(`hit`: Cache-Status says hit), a 304 with no body for the ETag sent (`not modified`), or a fan-out's JSON object
holding the document once per call (`fanout`).
"""

import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Expect = Literal["document", "hit", "not modified", "fanout"]
_HIT = re.compile(r";\s*hit\b")  # RFC 9211: `gateway; hit; ttl=299`


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; the last of repeated fields
    body: bytes


def fetch(url: str, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    """One GET; a 304 (which urllib raises as an error) is an answer like any other."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def problem(
    answer: Answer, expect: Expect, document: bytes, *, etag: str = "", calls: Sequence[str] = ()
) -> str | None:
    """What is wrong with `answer` for a path expecting `expect`, or None."""
    if expect == "not modified":
        if answer.status != 304 or answer.body:
            return f"{answer.status} with {len(answer.body)} body bytes instead of a bare 304"
        if answer.headers.get("etag") != etag:
            return f"a 304 tagged {answer.headers.get('etag')!r}, not the {etag!r} asked about"
        return None
    if answer.status != 200:
        return f"status {answer.status}"
    if expect == "fanout":
        return _fanout_problem(answer.body, document, calls)
    if answer.body != document:
        return f"{len(answer.body)} bytes that are not the origin's document"
    if expect == "hit" and not _HIT.search(answer.headers.get("cache-status", "")):
        return f"Cache-Status {answer.headers.get('cache-status')!r} instead of a hit"
    return None


def _fanout_problem(body: bytes, document: bytes, calls: Sequence[str]) -> str | None:
    try:
        merged = json.loads(body)
    except ValueError:
        return "a body that is not JSON"
    if not isinstance(merged, dict) or sorted(merged) != sorted(calls):
        keys = sorted(merged) if isinstance(merged, dict) else type(merged).__name__
        return f"keys {keys} instead of {sorted(calls)}"
    wrong = [name for name in calls if merged[name] != json.loads(document)]
    return f"calls {wrong} not holding the origin's document" if wrong else None
