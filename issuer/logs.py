"""Structured logs: every log line is one JSON object.

``issuer serve`` installs :func:`logging_config` in the server and in each worker
process (Granian applies it there; its own lines, from Rust too, come through the
``_granian`` logger). A record's ``fields`` extra (a dict) is merged
into its line: the access log (``issuer.middleware``) writes method, path,
status, duration, request id, source address and client id that way.

What never reaches a line: the query string (a careless client may put
credentials there), request headers (``Authorization`` above all), bodies, and
SQL parameters (aiosqlite's debug log prints them; it is held at INFO).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

#: Loggers whose debug output carries values we must not print.
_HELD_AT_INFO = ("aiosqlite", "asyncio", "httpcore", "hpack")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


#: ``json.dumps(line, default=str, separators=(",", ":"))``, its encoder built once.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def logging_config(level: str = "info") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document: JSON lines on stderr."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # The server's own loggers go through the root handler, as JSON too;
            # its access log stays off (issuer.middleware writes ours).
            "_granian": {"handlers": [], "propagate": True},
            "granian.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            **{name: {"level": "INFO" if level == "DEBUG" else level}
               for name in _HELD_AT_INFO},
        },
    }
