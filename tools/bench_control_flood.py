"""Benchmark: a kiosk's `status` and `mute` round trips while another client floods the control
socket with requests and never reads a reply (issue 13, item 3). Prints p50/p99/max in ms.

    .venv/bin/python -m tools.bench_control_flood [--requests 300]

Target: every `mute` answered within a fraction of a second (p99 < 50 ms, max < 250 ms on the
host; the Pi is 5-10x slower) while the flooder is connected, and the flooder dropped once its
replies stop moving (SEND_STALL_SECONDS).
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from device.service.control import SEND_STALL_SECONDS, ControlServer, send_command

# About the size of the service's real status reply (~60 counters).
STATUS = {"call_state": "in_call", "muted": False, "leds": {"status": "on", "mute": False},
          "counters": {f"counter_{i}": i * 1000 for i in range(60)}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(path: Path, requests: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"status": [], "mute": []}
    for i in range(requests):
        cmd = "mute" if i % 2 else "status"
        started = time.perf_counter()
        reply = send_command(path, cmd, timeout=5)
        times[cmd].append((time.perf_counter() - started) * 1000)
        assert reply["ok"], reply
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    for cmd, values in times.items():
        print(f"{label:<22} {cmd:<7} n={len(values):<4} p50 {percentile(values, 0.5):6.2f} ms  "
              f"p99 {percentile(values, 0.99):6.2f} ms  max {max(values):6.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = ControlServer(Path(tmp) / "c.sock", lambda e: None, lambda: STATUS)
        srv.bind()
        srv.start()
        try:
            report("no flood", measure(srv.path, args.requests))
            flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            flooder.connect(str(srv.path))
            flooder.setblocking(False)
            stop = threading.Event()
            sent = [0]

            def flood() -> None:
                chunk = b'{"cmd": "status"}\n' * 512
                while not stop.is_set():
                    try:
                        sent[0] += flooder.send(chunk)
                    except BlockingIOError:
                        stop.wait(0.001)
                    except OSError:
                        return

            pusher = threading.Thread(target=flood)
            pusher.start()
            started = time.monotonic()
            times = measure(srv.path, args.requests)
            elapsed = time.monotonic() - started
            report("flood, never read", times)
            deadline = time.monotonic() + SEND_STALL_SECONDS + 5
            while not srv.counters["slow_clients_dropped"] and time.monotonic() < deadline:
                stop.wait(0.01)
            dropped_after = time.monotonic() - started
            stop.set()
            pusher.join()
            flooder.close()
            print(f"flooder: sent {sent[0] / 1e6:.1f} MB of requests, {srv.requests} requests served in total; "
                  f"measurement took {elapsed:.2f} s; dropped: {bool(srv.counters['slow_clients_dropped'])} "
                  f"after {dropped_after:.2f} s (stall limit {SEND_STALL_SECONDS:g} s)")
        finally:
            srv.stop()
            srv.join(3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
