"""Logging setup: text or JSON lines on stderr, with secrets redacted from every record.

The redaction filter sits on the handler, so it covers our loggers and third-party ones
(websocket-client, websockets) at every level, including messages formatted from arguments and
exception tracebacks; it also sits on the websocket-client and websockets loggers themselves, so
a handler attached straight to them (`websocket.enableTrace`) gets redacted records too.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from device.service.redact import SecretScrubber


class RedactingFilter(logging.Filter):
    """Replaces each secret (and its URL-encoded form) and URL credentials in the final message
    and traceback (device/service/redact.py does the replacing)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.scrubber = SecretScrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.scrubber.text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.scrubber.text(formatted)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrubber.text(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, thread, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = (),
                  stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once for the process; returns the handler (tests remove it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless we debug; the filter still guards it.
    for name in ("websocket", "websockets"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
        # On the logger too: a handler attached straight to it (`websocket.enableTrace` adds one,
        # and its trace dumps the Authorization header) sees records before our handler does.
        for old_filter in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old_filter)
        logger.addFilter(redactor)
    return handler
