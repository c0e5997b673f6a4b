"""Secrets never reach a log line, whatever logger, level or traceback carries them."""
from __future__ import annotations

import io
import logging
import urllib.parse

from device.service.logs import setup_logging

KEY = "sk-live-0123456789abcdef+/="


def test_key_is_redacted_everywhere() -> None:
    out = io.StringIO()
    handler = setup_logging("DEBUG", "text", secrets=[KEY], stream=out)
    try:
        logging.getLogger("device.x").info("header Authorization: Bearer %s", KEY)
        logging.getLogger("websocket").debug("url ws://h/?token=%s", urllib.parse.quote_plus(KEY))
        try:
            raise RuntimeError(f"failed with {KEY}")
        except RuntimeError:
            logging.getLogger("device.y").exception("boom")
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert KEY not in text and urllib.parse.quote_plus(KEY) not in text
    assert text.count("***") == 3


def test_json_format() -> None:
    import json

    out = io.StringIO()
    handler = setup_logging("INFO", "json", secrets=[KEY], stream=out)
    try:
        logging.getLogger("device.z").warning("key=%s", KEY)
    finally:
        logging.getLogger().removeHandler(handler)
    record = json.loads(out.getvalue().strip())
    assert record["level"] == "WARNING" and record["msg"] == "key=***"
