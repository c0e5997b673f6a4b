"""The HTTP upgrade check, as the Atoms server does it: path, key, agent, sample rate, mode, variables.

Pure functions on the request path and headers, so every refusal rule is testable without a socket.
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from device.audio.formats import SESSION_RATES
from device.sim.options import CONNECT_PATH, DEFAULT_RATE, SimOptions

REDACTED = "***"


@dataclass(frozen=True)
class Refusal:
    """The upgrade is answered with an HTTP error instead of 101 (an immutable value, built on the
    simulator's event-loop thread)."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionParams:
    """What an accepted client asked for, and the rate the simulator answers with (an immutable
    value handed from the upgrade check to the session, both on the event-loop thread)."""

    requested_rate: int
    sample_rate: int
    mode: Literal["webcall", "chat"]
    variables: dict[str, Any]


def redacted_query(query: Mapping[str, list[str]]) -> dict[str, str]:
    """The query for logs and events: first value of each parameter, the token never shown."""
    return {k: (REDACTED if k == "token" else v[0]) for k, v in query.items() if v}


def parse_query(path: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(path)
    # keep_blank_values: "?token=" is a present-but-empty key (401), not an absent one.
    return parts.path, parse_qs(parts.query, keep_blank_values=True)


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def check_key(query: Mapping[str, list[str]], authorization: list[str],
              options: SimOptions) -> Refusal | None:
    """The API key check shared by the connect upgrade and the conversation endpoint."""
    token = _single(query, "token")
    if authorization and token is not None:
        return Refusal(400, "send the API key as a Bearer header or a token parameter, not both")
    if token is not None:
        key = token
    else:
        scheme, _, credentials = (authorization[0] if len(authorization) == 1 else "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Refusal(401, "missing or malformed API key")
        key = credentials.strip()
    # Constant-time: the simulator is a test double, but it should not teach timing leaks.
    if not hmac.compare_digest(key.encode(), options.api_key.encode()):
        return Refusal(401, "invalid API key")
    return None


def check_request(path: str, authorization: list[str], options: SimOptions) -> Refusal | SessionParams:
    """Validate an upgrade request; `authorization` holds every Authorization header value."""
    route, query = parse_query(path)
    if route != CONNECT_PATH:
        return Refusal(404, f"no such endpoint {route!r}; use {CONNECT_PATH}")
    refused = check_key(query, authorization, options)
    if refused is not None:
        return refused
    if _single(query, "agent_id") != options.agent_id:
        return Refusal(401, "agent_id not found")

    raw_rate = _single(query, "sample_rate")
    if raw_rate is None:
        requested = DEFAULT_RATE
    else:
        try:
            requested = int(raw_rate)
        except ValueError:
            return Refusal(400, f"sample_rate must be one of {SESSION_RATES}")
        if requested not in SESSION_RATES:
            return Refusal(400, f"sample_rate must be one of {SESSION_RATES}")

    mode = _single(query, "mode") or "webcall"
    if mode not in ("webcall", "chat"):
        return Refusal(400, "mode must be webcall or chat")

    variables: dict[str, Any] = {}
    raw_vars = _single(query, "variables")
    if raw_vars is not None:
        try:
            parsed = json.loads(raw_vars)  # parse_qs already URL-decoded it
        except ValueError:
            return Refusal(400, "variables must be URL-encoded JSON")
        if not isinstance(parsed, dict) or not all(
                isinstance(v, (str, int, float, bool)) for v in parsed.values()):
            return Refusal(400, "variables must be a JSON object of strings, numbers or booleans")
        variables = parsed

    rate = options.force_rate if options.force_rate is not None else requested
    return SessionParams(requested_rate=requested, sample_rate=rate,
                         mode="chat" if mode == "chat" else "webcall", variables=variables)
