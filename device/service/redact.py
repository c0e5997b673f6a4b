"""Redaction: the one place that removes secrets and credentials from text shown to people.

Used by settings errors and `config` output, the log filter (device/service/logs.py), the doctor
and the session's log URL. Two jobs:
- `redact_url` / `redact_urls`: a URL shown anywhere loses its userinfo password and the values of
  credential-like query parameters (`token=`, `key=`, `password=`, ...), whatever the key is.
- `SecretScrubber`: a known secret (the API key) is replaced wherever it appears, also in its
  URL-encoded and form-encoded forms, in any field or message.
"""
from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

REDACTED: Final = "***"
# Secrets shorter than this are not scrubbed from free text: a 1-3 character "key" would turn
# every occurrence of a common letter group into *** and make the message unreadable.
MIN_SECRET_LEN: Final = 4
# Query parameters whose values are credentials. Matched case-insensitively on the whole name.
SECRET_QUERY_KEYS: Final = frozenset({
    "token", "access_token", "auth", "auth_token", "api_key", "apikey", "key", "password", "pass",
    "passwd", "pwd", "secret", "client_secret", "sig", "signature", "credential", "credentials",
    "session_token", "bearer", "authorization", "x-api-key",
})
_USERINFO_IN_TEXT: Final = re.compile(r"(://)[^/@\s]*@")
# scheme://... up to whitespace or a quote, not ending in sentence punctuation: URLs embedded in
# messages and exception texts.
_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]]")


def _redact_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name, sep, _value = item.partition("=")
        if sep and urllib.parse.unquote_plus(name).strip().lower() in SECRET_QUERY_KEYS:
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(item)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """`url` with any userinfo password and credential query values replaced by ***.

    Never raises: a string that does not parse as a URL is returned with credential-looking
    `name=value` pairs still redacted.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host: the same rules on the raw text
        head, sep, query = url.partition("?")
        head = _USERINFO_IN_TEXT.sub(r"\1***@", head)
        return head + sep + _redact_query(query)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if has_password else f"{REDACTED}@{host}"
        # A bare userinfo without ':' is usually a token used as the user name: redact it too.
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, _redact_query(parts.query), _redact_query(parts.fragment)))


def redact_urls(text: str) -> str:
    """Every URL inside free text (a message, an exception) passed through `redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class SecretScrubber:
    """Replaces known secrets (as given, URL-encoded, form-encoded and as Python repr escapes)
    and credentials in URLs. Immutable after construction; any thread may use it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_LEN:
                found.update({secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
                              repr(secret)[1:-1]})
        self.secrets: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return redact_urls(value)

    def data(self, value: Any) -> Any:
        """JSON-like data (dicts, lists, strings) with every string scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value
