"""The conversation afterwards: `GET /atoms/v1/conversation/{callId}` and a tolerant reader of it.

The spec names the endpoint (the host of the connect URL, "using the call_id from
session.created") but not its response schema, so `transcript_lines` looks for a list of turns
under the usual names at any depth and for the role and text of each under the usual names,
and says so when it finds none (`--json` always shows the record as it came).

HTTP with the standard library's urllib: one GET with a timeout is all we need, and the service
already avoids a second HTTP stack (websocket-client does its own upgrade). `urllib.request` is
imported at the first fetch, not with this module: it brings http.client and the email package
(~3 MB of RSS measured, docs/benchmarks.md) into every service, most of which never fetch.
"""
from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from urllib.request import OpenerDirector

log = logging.getLogger(__name__)

CONVERSATION_PATH: Final = "/atoms/v1/conversation/"
FETCH_TIMEOUT: Final = 10.0
MAX_RESPONSE_BYTES: Final = 8 << 20
_LIST_KEYS: Final = ("transcript", "transcripts", "messages", "conversation", "turns", "history",
                     "utterances")
_ROLE_KEYS: Final = ("role", "speaker", "sender", "from", "participant", "type")
_TEXT_KEYS: Final = ("text", "content", "message", "transcript", "utterance", "value")
_AGENT_ROLES: Final = frozenset({"agent", "assistant", "bot", "ai", "system_agent"})
_USER_ROLES: Final = frozenset({"user", "human", "customer", "caller", "client"})


def _opener() -> OpenerDirector:
    """An opener that refuses redirects: urllib would follow one with our Authorization header to
    wherever it points, and the key must only ever go to the configured host."""
    import urllib.error
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                             newurl: str) -> None:
            raise urllib.error.HTTPError(req.full_url, code, f"redirected ({msg}); not followed", headers, fp)

    return urllib.request.build_opener(NoRedirects)


class ConversationError(Exception):
    """The record could not be fetched; the message is for a person (never contains the key)."""


@dataclass(frozen=True)
class ConversationSource:
    """Where and how to ask: the connect URL (ws:// or wss://), the key and how it is sent."""

    url: str
    api_key: str
    auth: Literal["header", "query"] = "header"
    timeout: float = FETCH_TIMEOUT


def conversation_url(connect_url: str, call_id: str) -> str:
    """The endpoint on the connect URL's host: https for wss:// (http for a ws:// simulator)."""
    parts = urllib.parse.urlsplit(connect_url)
    scheme = "http" if parts.scheme == "ws" else "https"
    path = CONVERSATION_PATH + urllib.parse.quote(call_id, safe="")
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


def fetch_conversation(source: ConversationSource, call_id: str) -> dict[str, Any]:
    """GET the call's record. Raises ConversationError (HTTP status, network, not JSON)."""
    import urllib.error
    import urllib.request

    if not call_id.strip():
        raise ConversationError("no call id given")
    url = conversation_url(source.url, call_id)
    shown = url  # what errors may show: the URL without the key
    headers = {"Accept": "application/json", "User-Agent": "atoms-appliance"}
    if source.auth == "query":
        url += "?" + urllib.parse.urlencode({"token": source.api_key})
    else:
        headers["Authorization"] = f"Bearer {source.api_key}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with _opener().open(request, timeout=source.timeout) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        hint = {401: "the API key was refused", 403: "the API key may not read this call",
                404: "no such call (yet: the record may take a moment after the call ends)"}.get(exc.code, "")
        raise ConversationError(f"GET {shown}: HTTP {exc.code}{': ' + hint if hint else ''}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConversationError(f"GET {shown}: {reason}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise ConversationError(f"GET {shown}: the response is larger than {MAX_RESPONSE_BYTES >> 20} MB")
    try:
        record = json.loads(body)
    except ValueError as exc:
        raise ConversationError(f"GET {shown}: the response is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ConversationError(f"GET {shown}: the response is not a JSON object")
    return record


def _turn_lists(node: Any, depth: int = 0) -> Iterator[list[Any]]:
    """Lists of turns under the usual names, outermost first (depth-limited: hostile input)."""
    if depth > 6 or not isinstance(node, dict):
        return
    for key in _LIST_KEYS:
        value = node.get(key)
        if isinstance(value, list):
            yield value
    for value in node.values():
        if isinstance(value, dict):
            yield from _turn_lists(value, depth + 1)


def _first_str(item: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _role(raw: str | None) -> str:
    if raw is None:
        return "?"
    low = raw.strip().lower()
    if low in _AGENT_ROLES:
        return "agent"
    if low in _USER_ROLES:
        return "user"
    return low[:20]


def transcript_lines(record: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(role, text) per turn, or None when the record holds nothing that looks like a transcript.

    Accepts turns as objects (role/speaker/sender + text/content/message) or as "role: text"
    strings, and a transcript that is one string (one line per turn).
    """
    for turns in _turn_lists(record):
        lines: list[tuple[str, str]] = []
        for item in turns:
            if isinstance(item, dict):
                text = _first_str(item, _TEXT_KEYS)
                if text is not None:
                    lines.append((_role(_first_str(item, _ROLE_KEYS)), text))
            elif isinstance(item, str) and item.strip():
                role, sep, text = item.partition(":")
                lines.append((_role(role), text.strip()) if sep and len(role) <= 20 else ("?", item))
        if lines or not turns:
            return lines
    for node in (record, record.get("data")):
        if isinstance(node, dict) and isinstance(node.get("transcript"), str):
            return [("?", line) for line in node["transcript"].splitlines() if line.strip()]
    return None


def format_transcript(record: dict[str, Any]) -> str:
    """The transcript for people: one "role: text" line per turn."""
    lines = transcript_lines(record)
    if lines is None:
        return "(no transcript found in the record; see --json for the whole record)"
    if not lines:
        return "(the transcript is empty)"
    width = max(len(role) for role, _ in lines)
    return "\n".join(f"{role.rjust(width)}: {text}" for role, text in lines)
