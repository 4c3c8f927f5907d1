"""Header handling per proxied request: gateway/headers.py on the fields a browser sends and nginx answers with.

Prints one line per case: microseconds per call (best of several repeats of timeit) and calls per second.
BENCH_QUICK=1 shortens the repeats.
"""

import os
import timeit
from collections.abc import Callable

from asgi_gateway.gateway.headers import NO_RULES, HeaderRules, client_response_headers, upstream_request_headers
from asgi_gateway.middleware.types import RawHeaders

BROWSER: RawHeaders = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    (b"accept", b"application/json, text/plain, */*"),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"referer", b"https://app.example.com/dashboard"),
    (b"origin", b"https://app.example.com"),
    (b"connection", b"keep-alive"),
    (b"cookie", b"session=4f1c2a9e7b; theme=dark; _ga=GA1.2.1234567890.1700000000"),
    (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl"),
    (b"sec-fetch-dest", b"empty"),
    (b"sec-fetch-mode", b"cors"),
    (b"sec-fetch-site", b"same-site"),
    (b"if-none-match", b'"6745f2a1-400"'),
    (b"x-request-id", b"0b9e8a52-3c4d-4b1a-9f3e-2d7c6b5a4e3f"),
]
BEHIND_A_PROXY: RawHeaders = [
    *BROWSER[:7],
    (b"connection", b"keep-alive, x-trace-hop"),
    (b"x-trace-hop", b"1"),
    (b"x-forwarded-for", b"203.0.113.7"),
    (b"forwarded", b"for=203.0.113.7;proto=https"),
    *BROWSER[8:],
]
NGINX_ANSWER: RawHeaders = [  # as aiohttp hands them over: the origin's case
    (b"Server", b"nginx/1.22.1"),
    (b"Date", b"Mon, 23 Nov 2026 06:15:20 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"1024"),
    (b"Last-Modified", b"Mon, 23 Nov 2026 06:00:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"6745f2a1-400"'),
    (b"Accept-Ranges", b"bytes"),
]
ROUTE_RULES = HeaderRules.build(["Cookie"], {"X-Env": "prod"}, {"X-Via": "gw"})
CLIENT = ("198.51.100.23", 51234)


def cases() -> dict[str, Callable[[], object]]:
    return {
        "upstream_request_headers, 15 browser fields": lambda: upstream_request_headers(
            BROWSER, host="127.0.0.1:8081", scheme="http", client=CLIENT, rules=NO_RULES
        ),
        "upstream_request_headers, behind a proxy, route rules": lambda: upstream_request_headers(
            BEHIND_A_PROXY, host="127.0.0.1:8081", scheme="https", client=CLIENT, rules=ROUTE_RULES
        ),
        "client_response_headers, nginx's 8 fields": lambda: client_response_headers(NGINX_ANSWER, NO_RULES),
        "client_response_headers, route rules": lambda: client_response_headers(NGINX_ANSWER, ROUTE_RULES),
    }


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    repeats = 3 if quick else 5
    width = max(len(name) for name in cases())
    print(f"{'case':<{width}}  {'us/call':>8}  {'calls/s':>10}")
    for name, call in cases().items():
        timer = timeit.Timer(call)
        number, _ = timer.autorange()
        best = min(timer.repeat(repeat=repeats, number=number)) / number
        print(f"{name:<{width}}  {best * 1e6:8.2f}  {1 / best:10,.0f}")


if __name__ == "__main__":
    main()
