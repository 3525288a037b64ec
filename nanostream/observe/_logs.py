"""Logging for ``nanostream run``: the standard library's, plain or as JSON lines.

Structured fields travel as ``extra=`` on an ordinary log call
(``logger.info("...", extra={"pipeline": name, "event": "started"})``), so
code that logs needs no knowledge of the output format.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

#: The attributes every log record has; any other was given as ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("plain", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and every
    structured field the log call gave as ``extra=`` (pipeline, node,
    event, counts, signal, ... or a node's own)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field, value in record.__dict__.items():
            if field not in _RECORD_ATTRIBUTES:
                entry.setdefault(field, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=repr)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    The live console swaps ``sys.stderr`` for a proxy that prints above its
    table; a handler holding the original stream would scribble over it.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr


def configure_logging(level: str = "warning", format: str = "plain") -> logging.Handler:
    """Send every logger's records at ``level`` and above to stderr in ``format``.

    Replaces the handler a previous call installed; returns the new one.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format!r}")
    handler = _CurrentStderrHandler()
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
