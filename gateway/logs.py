"""Logging for `gateway run`, and the access log: one line per request on stdout, instead of the server's.

Access lines skip the logging machinery (a record, handler locks and a flush per request) and stdout's own
object, which PYTHONUNBUFFERED (set in most container images) turns into a system call per line.
They go into a buffer of their own on stdout's file descriptor, flushed every second.
"""

import asyncio
import sys
from typing import Any, BinaryIO

ACCESS_FLUSH_SECONDS = 1.0


class AccessLines:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream or _stdout_bytes()

    def write(self, line: str) -> None:
        self._stream.write(line.encode() + b"\n")

    async def flush_every_second(self) -> None:
        """Until cancelled: lines reach the log within a second even when too few to fill the buffer."""
        try:
            while True:
                await asyncio.sleep(ACCESS_FLUSH_SECONDS)
                self._stream.flush()
        finally:
            self._stream.flush()


def _stdout_bytes() -> BinaryIO:
    """A buffer of our own on stdout's descriptor; where stdout has none (captured, embedded), its own."""
    try:
        return open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
        return sys.stdout.buffer


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
