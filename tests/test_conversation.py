"""The conversation afterwards: the endpoint's URL, a tolerant transcript reader, the fetch
against the real simulator (both auth styles, refusals, redirects), and the bounded record store."""
from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.service.call_records import RecordStore, load_last_call_id, save_last_call_id
from device.session.conversation import (
    ConversationError,
    ConversationSource,
    conversation_url,
    fetch_conversation,
    format_transcript,
    transcript_lines,
)
from tools.service_process import TEST_KEY as DEFAULT_TEST_KEY


@pytest.mark.parametrize(("url", "expected"), [
    ("wss://api.smallest.ai/atoms/v1/agent/connect", "https://api.smallest.ai/atoms/v1/conversation/C-1"),
    ("ws://127.0.0.1:8765/atoms/v1/agent/connect", "http://127.0.0.1:8765/atoms/v1/conversation/C-1"),
    ("wss://[::1]:9/x?agent_id=a", "https://[::1]:9/atoms/v1/conversation/C-1"),
])
def test_url_is_the_connect_host(url: str, expected: str) -> None:
    assert conversation_url(url, "C-1") == expected


def test_call_id_is_quoted_into_one_path_segment() -> None:
    assert conversation_url("wss://h/x", "../a b?c").endswith("/conversation/..%2Fa%20b%3Fc")


SHAPES: list[tuple[dict[str, Any], list[tuple[str, str]] | None]] = [
    # the simulator's shape
    ({"status": "success", "data": {"transcript": [{"role": "user", "content": "hi"},
                                                   {"role": "agent", "content": "hello"}]}},
     [("user", "hi"), ("agent", "hello")]),
    # chat-style messages at the top, assistant/human roles
    ({"messages": [{"role": "assistant", "text": "Welcome"}, {"role": "human", "message": "Thanks"}]},
     [("agent", "Welcome"), ("user", "Thanks")]),
    # speaker/utterance deep inside, an entry without text skipped
    ({"data": {"call": {"conversation": [{"speaker": "Bot", "utterance": "a"}, {"speaker": "caller"},
                                         {"speaker": "Caller", "utterance": "b"}]}}},
     [("agent", "a"), ("user", "b")]),
    # "role: text" strings
    ({"data": {"transcript": ["agent: one", "user: two", "no role here"]}},
     [("agent", "one"), ("user", "two"), ("?", "no role here")]),
    # one string
    ({"data": {"transcript": "agent: hello\nuser: bye\n"}}, [("?", "agent: hello"), ("?", "user: bye")]),
    ({"data": {"transcript": []}}, []),
    ({"status": "success", "data": {"callId": "x", "durationSeconds": 3}}, None),
    ({"transcript": [1, None, {"role": 5, "content": ["x"]}]}, None),
]


@pytest.mark.parametrize(("record", "lines"), SHAPES)
def test_transcript_shapes(record: dict[str, Any], lines: list[tuple[str, str]] | None) -> None:
    assert transcript_lines(record) == lines
    text = format_transcript(record)
    assert ("no transcript found" in text) if lines is None else all(t in text for _, t in lines)


def test_hostile_nesting_does_not_recurse_forever() -> None:
    record: dict[str, Any] = {}
    node = record
    for _ in range(5000):
        node["data"] = {}
        node = node["data"]
    assert transcript_lines(record) is None


def _held_call(sim: Any) -> str:
    sim.conversations.start("CALL-1", "sess-1", "sim-agent")
    sim.conversations.line("CALL-1", "agent", "Welcome to the kiosk.")
    sim.conversations.line("CALL-1", "user", "Where is the exit?")
    sim.conversations.end("CALL-1")
    return "CALL-1"


@pytest.mark.parametrize("auth", ["header", "query"])
def test_fetch_from_the_simulator(start_sim: Any, auth: str) -> None:
    sim = start_sim()
    call_id = _held_call(sim)
    source = ConversationSource(sim.url, DEFAULT_TEST_KEY, auth)  # type: ignore[arg-type]
    record = fetch_conversation(source, call_id)
    assert record["data"]["callId"] == call_id and record["data"]["status"] == "completed"
    assert transcript_lines(record) == [("agent", "Welcome to the kiosk."), ("user", "Where is the exit?")]
    request = sim.wait_for_event("conversation_request", 2)
    assert request is not None and request["status"] == 200
    assert request["auth_header"] is (auth == "header") and request["auth_query"] is (auth == "query")
    assert sim.connections == []  # plain HTTP: not an upgrade attempt


def test_refusals_name_the_status_and_never_the_key(start_sim: Any) -> None:
    sim = start_sim()
    call_id = _held_call(sim)
    with pytest.raises(ConversationError, match="HTTP 401") as refused:
        fetch_conversation(ConversationSource(sim.url, "sk-wrong-SECRET"), call_id)
    assert "SECRET" not in str(refused.value)
    with pytest.raises(ConversationError, match="HTTP 401") as refused:
        fetch_conversation(ConversationSource(sim.url, "sk-wrong-SECRET", "query"), call_id)
    assert "SECRET" not in str(refused.value)
    with pytest.raises(ConversationError, match="HTTP 404"):
        fetch_conversation(ConversationSource(sim.url, DEFAULT_TEST_KEY), "CALL-unknown")


@pytest.fixture
def redirecting_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that redirects every request elsewhere and records Authorization headers."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{server.server_address[1]}/atoms/v1/agent/connect", seen
    server.shutdown()
    thread.join(5)
    server.server_close()


def test_a_redirect_is_not_followed_with_the_key(redirecting_server: tuple[str, list[str]]) -> None:
    url, seen = redirecting_server
    with pytest.raises(ConversationError, match="HTTP 302"):
        fetch_conversation(ConversationSource(url, DEFAULT_TEST_KEY), "C-1")
    assert seen == [f"Bearer {DEFAULT_TEST_KEY}"]  # asked once, at the configured host only


def test_unreachable_host_is_a_clear_error() -> None:
    with pytest.raises(ConversationError, match="GET http://127.0.0.1:9/"):
        fetch_conversation(ConversationSource("ws://127.0.0.1:9/x", DEFAULT_TEST_KEY, timeout=2), "C-1")


def test_last_call_id_round_trip(tmp_path: Path) -> None:
    assert load_last_call_id(tmp_path) is None
    save_last_call_id(tmp_path, "CALL-9", "sess-9")
    assert load_last_call_id(tmp_path) == "CALL-9"
    (tmp_path / "last_call.json").write_text("{not json")
    assert load_last_call_id(tmp_path) is None


def test_record_store_is_bounded_by_count_and_size(tmp_path: Path) -> None:
    store = RecordStore(tmp_path, keep=2, max_bytes=400)
    for i in range(4):
        assert store.store(f"CALL-{i}", {"data": {"transcript": [{"role": "user", "content": f"n{i}"}]}})
        # Written a minute apart, as calls are (a file system's mtime may be coarse).
        when = time.time() - 600 + 60 * i
        os.utime(tmp_path / "conversations" / f"CALL-{i}.json", (when, when))
    files = sorted(p.name for p in (tmp_path / "conversations").iterdir())
    assert files == ["CALL-2.json", "CALL-3.json"] and store.removed == 2 and store.saved == 4
    assert stat.S_IMODE((tmp_path / "conversations" / "CALL-3.json").stat().st_mode) == 0o600
    newest = json.loads((tmp_path / "conversations" / "CALL-3.json").read_text())
    assert newest["data"]["transcript"][0]["content"] == "n3"
    assert not store.store("CALL-big", {"data": {"transcript": "x" * 1000}})
    assert store.oversize == 1 and not (tmp_path / "conversations" / "CALL-big.json").exists()
    assert store.path_for("../../etc/passwd").parent == tmp_path / "conversations"
