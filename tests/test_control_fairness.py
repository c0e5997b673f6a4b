"""The control socket serves every client fairly (issue 13, item 3).

- a client flooding requests and never reading cannot hold up another client's `status` and
  `mute`, is dropped once its replies stop moving (an injected clock, not a sleep), and is
  counted and logged once;
- idle connections are closed after the idle time; at the connection limit the longest-idle one
  makes room, so a kiosk's `mute` always gets in;
- a slow `dump_audio` runs beside the loop, not in it;
- 200 idle connections against a server in a process with a low `ulimit -n`: it does not spin
  (CPU time and loop turns over a period) and still answers a new client.
The latency numbers under a flood are measured by `python -m tools.bench_control_flood`, not asserted here.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.core.events import Command, Event
from device.service import control
from device.service.control import ControlServer, send_command
from tools.polling import wait_until

STATUS = {"call_state": "in_call", "muted": False, "counters": {f"c{i}": i for i in range(60)}}


class FakeNow:
    """A monotonic clock the test moves (the server's idle and stall timers read it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeNow:
    return FakeNow()


@pytest.fixture
def served(tmp_path: Path, clock: FakeNow) -> Iterator[tuple[ControlServer, queue.SimpleQueue[Event]]]:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    srv = ControlServer(tmp_path / "c.sock", events.put, lambda: STATUS, now=clock, max_clients=6)
    srv.bind()
    srv.start()
    yield srv, events
    srv.stop()
    assert srv.join(3)


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    sock.connect(str(path))
    return sock


def test_a_flooding_client_that_never_reads_does_not_hold_up_others(
        served: tuple[ControlServer, queue.SimpleQueue[Event]], clock: FakeNow) -> None:
    srv, events = served
    flooder = connect(srv.path)
    flooder.setblocking(False)
    request = b'{"cmd": "status"}\n' * 256
    sent = 0

    def flood() -> None:   # as fast as the kernel takes it; never reads a reply
        nonlocal sent
        while sent < 4_000_000:
            try:
                sent += flooder.send(request)
            except BlockingIOError:
                if not wait_until(lambda: srv.counters["slow_clients_dropped"], 0.005):
                    continue
                return
            except OSError:
                return

    pusher = threading.Thread(target=flood)
    pusher.start()
    # The server stops reading the flooder once its replies are not read: it backs up.
    assert wait_until(lambda: srv.requests > 100, 5)
    for i in range(20):
        cmd = "mute" if i % 2 else "status"
        reply = send_command(srv.path, cmd, timeout=2)   # a generous bound; tools/ measures the real one
        assert reply["ok"] is True
        if cmd == "mute":
            assert events.get(timeout=2) == Command("mute")
    assert srv.counters["slow_clients_dropped"] == 0
    queued = srv.requests
    # Its replies have not moved: once the stall time has passed it is dropped, logged once.
    clock.t += control.SEND_STALL_SECONDS + 0.1
    assert wait_until(lambda: srv.counters["slow_clients_dropped"] == 1, 5)
    pusher.join(5)
    assert not pusher.is_alive()
    flooder.close()
    # Bounded: it was served at most a bounded backlog beyond what its unread replies hold.
    assert queued - 20 < (control.MAX_OUTPUT_BYTES // 200) + 400
    assert send_command(srv.path, "status", timeout=2)["ok"]


def test_a_slow_reader_is_not_dropped_while_its_replies_move(
        served: tuple[ControlServer, queue.SimpleQueue[Event]], clock: FakeNow) -> None:
    srv, _ = served
    with connect(srv.path) as slow:
        slow.sendall(b'{"cmd": "status"}\n' * 200)
        got = b""
        while got.count(b"\n") < 200:
            clock.t += 1.0   # a second between reads: slower than the stall time in total, but moving
            got += slow.recv(4096)
        assert srv.counters["slow_clients_dropped"] == 0


def test_idle_connections_are_closed(served: tuple[ControlServer, queue.SimpleQueue[Event]],
                                     clock: FakeNow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="device.service.control")  # whatever an earlier test left
    srv, _ = served
    idle = [connect(srv.path) for _ in range(3)]
    assert wait_until(lambda: srv.clients_now == 3, 5)
    clock.t += control.IDLE_SECONDS + 1
    for sock in idle:
        assert sock.recv(10) == b""   # closed by the server (recv would time out after 2 s otherwise)
        sock.close()
    assert srv.counters["idle_closed"] == 3
    assert caplog.text.count("idle for") == 1   # one log line for the kind


def test_at_the_connection_limit_the_longest_idle_client_makes_room(
        served: tuple[ControlServer, queue.SimpleQueue[Event]], clock: FakeNow) -> None:
    srv, events = served
    held = []
    for _ in range(6):   # max_clients in the fixture
        held.append(connect(srv.path))
        clock.t += 1.0
        count = len(held)
        assert wait_until(lambda: srv.clients_now == count, 5)  # noqa: B023 - used at once
    assert send_command(srv.path, "mute", timeout=2) == {"ok": True, "cmd": "mute"}
    assert events.get(timeout=2) == Command("mute")
    assert held[0].recv(10) == b""    # the oldest idle one was closed for it
    assert srv.counters["evicted"] >= 1
    for sock in held:
        sock.close()


def test_a_slow_dump_does_not_block_other_clients(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_dump() -> dict[str, Any]:
        entered.set()
        assert release.wait(5)
        return {"ok": True, "cmd": "dump_audio", "files": []}

    srv = ControlServer(tmp_path / "c.sock", lambda e: None, lambda: STATUS, slow_dump)
    srv.bind()
    srv.start()
    try:
        with connect(srv.path) as dumper:
            dumper.sendall(b'{"cmd": "dump_audio"}\n{"cmd": "status"}\n')
            assert entered.wait(5)
            assert send_command(srv.path, "status", timeout=2)["ok"]   # while the dump is written
            release.set()
            replies = b""
            while replies.count(b"\n") < 2:
                replies += dumper.recv(65536)
        first, second = (json.loads(line) for line in replies.splitlines())
        assert first["cmd"] == "dump_audio" and second["status"] == STATUS   # in request order
    finally:
        release.set()
        srv.stop()
        assert srv.join(3)


def test_a_line_too_long_is_refused_once_logged_once(
        served: tuple[ControlServer, queue.SimpleQueue[Event]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="device.service.control")
    srv, _ = served
    for _ in range(3):
        with connect(srv.path) as sock:
            sock.sendall(b"x" * 5000)
            assert b"request too long" in sock.recv(4096)
    assert srv.counters["too_long"] == 3 and caplog.text.count("longer than") == 1


# -- 200 idle connections, a low ulimit -n, in another process --------------------------------------
SERVER = r"""
import json, resource, sys, threading
from pathlib import Path
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
from device.service.control import ControlServer
box = {}
srv = ControlServer(Path(sys.argv[1]), lambda e: None,
                    lambda: {"turns": box["srv"].turns, "clients": box["srv"].clients_now,
                             "counters": box["srv"].counters})
box["srv"] = srv
srv.bind()
srv.start()
print("ready", flush=True)
sys.stdin.readline()
srv.stop()
srv.join(3)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_200_idle_connections_under_a_low_fd_limit_do_not_make_it_spin(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(path), "24"], cwd=root, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    conns: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for _ in range(200):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(path))
            except BlockingIOError:
                pass   # the backlog is full for a moment: this one waits in the kernel
            conns.append(sock)
        first = send_command(path, "status", timeout=5)["status"]
        assert first["counters"]["fd_exhausted"] >= 1   # it really ran out of descriptors
        cpu0, turns0, t0 = cpu_seconds(proc.pid), first["turns"], time.monotonic()
        # The measurement period (not a wait for a state): how busy is it while nothing happens?
        threading.Event().wait(1.5)
        status = send_command(path, "status", timeout=5)["status"]
        cpu, turns, wall = cpu_seconds(proc.pid) - cpu0, status["turns"] - turns0, time.monotonic() - t0
        print(f"idle period {wall:.2f} s: cpu {cpu:.3f} s, loop turns {turns}, clients {status['clients']}")
        # A spinning accept loop burns a whole core and turns ~100k times a second.
        assert cpu < 0.3 * wall and turns < 200 * wall, (cpu, turns)
        assert send_command(path, "mute", timeout=5)["ok"]
    finally:
        for sock in conns:
            sock.close()
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
