"""Structured logging: JSON lines in production, readable text elsewhere; a request/process context."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_process_type = "pulse"

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName",
                                                                             "color_message"}


class JsonFormatter(logging.Formatter):
    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "process": _process_type,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self._encoder.encode(out).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                          if k not in _STANDARD and not k.startswith("_"))
        rid = request_id_var.get()
        base = (f"{datetime.fromtimestamp(record.created, UTC):%H:%M:%S} {record.levelname[0]} "
                f"{_process_type} {record.name}: {record.getMessage()}")
        if rid:
            base += f" request_id={rid}"
        if extras:
            base += " " + extras
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure_logging(process_type: str, fmt: str, level: str) -> None:
    """Send every log line to stderr in the chosen format."""
    global _process_type
    _process_type = process_type
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("gmqtt", "amqtt", "transitions", "apscheduler", "httpx", "httpcore", "pysnmp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
