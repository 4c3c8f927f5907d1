"""Logging for `gateway run`: the gateway's own access log instead of the server's, one line per request."""

import logging
from typing import Any

ACCESS_LOGGER = logging.getLogger("gateway.access")


def log_config(level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn: its own loggers as usual, `gateway.*` beside them, access lines bare on stdout."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "server": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "named": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(name)s: %(message)s"},
            "bare": {"format": "%(message)s"},
        },
        "handlers": {
            "server": {"class": "logging.StreamHandler", "formatter": "server", "stream": "ext://sys.stderr"},
            "named": {"class": "logging.StreamHandler", "formatter": "named", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "bare", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["server"], "level": upper, "propagate": False},
            "gateway": {"handlers": ["named"], "level": upper, "propagate": False},
            "flags": {"handlers": ["named"], "level": upper, "propagate": False},
            "middleware": {"handlers": ["named"], "level": upper, "propagate": False},
            ACCESS_LOGGER.name: {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
