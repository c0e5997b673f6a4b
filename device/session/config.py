"""What the session client needs from settings, and the URL and headers built from it.

The API key goes in the `Authorization: Bearer` header by default, which keeps it out of URLs and
logs; only `auth = "query"` puts it in the URL (as `token`), and then `log_url()` redacts it.
"""
from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from device.service.redact import redact_url


@dataclass(frozen=True)
class SessionConfig:
    """The session's settings (kept small so tests can build it directly). Immutable: any thread."""

    url: str
    api_key: str
    agent_id: str
    sample_rate: int = 16000
    variables: dict[str, Any] = field(default_factory=dict)
    auth: str = "header"  # "header" | "query"
    connect_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    max_message_bytes: int = 1 << 20

    @property
    def tls(self) -> bool:
        return self.url.startswith("wss://")

    def connect_url(self) -> str:
        """The URL with query parameters; the key is in it only when `auth == "query"`."""
        params: dict[str, str] = {"agent_id": self.agent_id, "mode": "webcall",
                                  "sample_rate": str(self.sample_rate)}
        if self.variables:
            params["variables"] = json.dumps(self.variables, separators=(",", ":"))
        if self.auth == "query":
            params["token"] = self.api_key
        sep = "&" if "?" in self.url else "?"
        return self.url + sep + urllib.parse.urlencode(params)

    def log_url(self) -> str:
        """The URL as it may appear in logs: the token query value and any userinfo password
        replaced (device/service/redact.py, the one redaction of URLs)."""
        return redact_url(self.connect_url())

    def headers(self) -> list[str]:
        return [f"Authorization: Bearer {self.api_key}"] if self.auth == "header" else []
