"""Logging for `gateway run`, and the access log: one line per request on stdout, instead of the server's.

Access lines skip the logging machinery (a record, handler locks and a flush per request measured about
30 µs); they go through stdout's buffer, which the gateway flushes every second.
"""

import asyncio
import sys
from typing import Any

ACCESS_FLUSH_SECONDS = 1.0


def write_access_line(line: str) -> None:
    sys.stdout.write(line + "\n")


async def flush_access_lines() -> None:
    """Until cancelled: lines reach the log within a second even when traffic is too low to fill the buffer."""
    try:
        while True:
            await asyncio.sleep(ACCESS_FLUSH_SECONDS)
            sys.stdout.flush()
    finally:
        sys.stdout.flush()


def log_config(level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn: its own loggers as usual, and ours (gateway, flags, middleware) beside them."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "server": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "named": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(name)s: %(message)s"},
        },
        "handlers": {
            "server": {"class": "logging.StreamHandler", "formatter": "server", "stream": "ext://sys.stderr"},
            "named": {"class": "logging.StreamHandler", "formatter": "named", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["server"], "level": upper, "propagate": False},
            "gateway": {"handlers": ["named"], "level": upper, "propagate": False},
            "flags": {"handlers": ["named"], "level": upper, "propagate": False},
            "middleware": {"handlers": ["named"], "level": upper, "propagate": False},
        },
    }
