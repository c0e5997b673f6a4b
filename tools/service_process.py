"""Run the real service as a subprocess (`python -m device run`) and watch it without sleeping.

Its stderr is read by a thread into a list guarded by a Condition, so callers wait for a log line
(`wait_for_log`) with a bounded timeout instead of sleeping; the simulator offers the same for
what crosses the wire (`Simulator.wait_for`). Used by tests/e2e and, through
`tools.fault_service`, by tests/faults and `tools.soak`.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from device.service.control import send_command
from tools import REPO
from tools.polling import wait_until

# The key the harness gives the service. Distinctive, so that "the key never appears" can be
# checked by searching for it; the tests' simulator fixture accepts it (tests/conftest.py).
TEST_KEY: Final = "sk-test-SECRET-4242-do-not-log"


def speech_wav(path: Path, lead_s: float = 0.5, tail_s: float = 1.5, rate: int = 16000) -> Path:
    """A spoken question (the bundled espeak-ng recording) between silences, as the fake mic input."""
    with wave.open(str(REPO / "device" / "assets" / "question.wav"), "rb") as w:
        assert w.getframerate() == rate and w.getnchannels() == 1
        speech = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    pcm = np.concatenate([np.zeros(int(lead_s * rate), "<i2"), speech, np.zeros(int(tail_s * rate), "<i2")])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


class ServiceProcess:
    """The appliance as a child process with fake audio and no GPIO, against `url`."""

    def __init__(self, tmp: Path, url: str, **settings: Any) -> None:
        self.tmp = tmp
        self.socket = tmp / "control.sock"
        self.playback_file = tmp / "played.wav"
        self.stats_file = tmp / "stats.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMS_")}
        env.update({
            "ATOMS_API_KEY": TEST_KEY, "ATOMS_AGENT_ID": "sim-agent", "ATOMS_URL": url,
            "ATOMS_AUDIO_BACKEND": "fake", "ATOMS_GPIO_BACKEND": "none",
            "ATOMS_CONTROL_SOCKET": str(self.socket), "ATOMS_STATE_DIR": str(tmp / "state"),
            "ATOMS_FAKE_PLAYBACK_FILE": str(self.playback_file), "ATOMS_STATS_FILE": str(self.stats_file),
            "ATOMS_STATS_INTERVAL": "1", "ATOMS_LOG_LEVEL": "DEBUG", "ATOMS_BACKOFF_INITIAL": "0.2",
            "ATOMS_BACKOFF_MAX": "2", "ATOMS_EARCONS": "false", "PYTHONUNBUFFERED": "1",
        })
        env.update({f"ATOMS_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *run_args: str) -> ServiceProcess:
        """Start `python -m device run [run_args]` and wait for its `ready:` line (20 s at most).

        Its stdin is a pipe (`keys()` writes to it: the keyboard of `run --keys`).
        """
        self.proc = subprocess.Popen([sys.executable, "-m", "device", "run", *run_args], env=self.env,
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        assert self.wait_for_log(r"ready: ", 20), self.output()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for_log(self, pattern: str, timeout: float, count: int = 1) -> str | None:
        regex = re.compile(pattern)
        with self._cond:
            found: list[str] = []

            def ready() -> bool:
                found[:] = [line for line in self.lines if regex.search(line)]
                return len(found) >= count or "<eof>" in self.lines

            self._cond.wait_for(ready, timeout)
            return found[count - 1] if len(found) >= count else None

    def count_log(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def keys(self, text: str) -> None:
        """Type `text` on the service's stdin (the buttons of `run --keys`)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def ctl(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return send_command(self.socket, cmd, **fields)

    def status(self) -> dict[str, Any]:
        reply = self.ctl("status")
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status

    def wait_status(self, timeout: float = 5.0, **expected: Any) -> dict[str, Any]:
        """The first status whose fields equal `expected` (polled over the control socket, bounded:
        the status is published just after the state line is logged, not with it)."""
        last: list[dict[str, Any]] = [{}]

        def matches() -> bool:
            last[0] = self.status()
            return all(last[0].get(k) == v for k, v in expected.items())

        assert wait_until(matches, timeout), (expected, last[0])
        return last[0]

    def wait_status_where(self, predicate: Callable[[dict[str, Any]], bool],
                          timeout: float = 5.0) -> dict[str, Any]:
        """The first status snapshot `predicate` accepts, re-read every 20 ms for at most `timeout`
        seconds (the log line of a change may come just before the snapshot that shows it)."""
        seen: list[dict[str, Any]] = []

        def accepted() -> bool:
            seen[:] = [self.status()]
            return predicate(seen[0])

        assert wait_until(accepted, timeout, interval=0.02), seen
        return seen[0]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM and wait; returns the exit status (kills and fails after `timeout`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"service did not exit within {timeout} s\n{self.output()}") from None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()


def played_agent_seconds(path: Path, threshold: int = 300) -> float:
    """Seconds from the first to the last sound the fake speaker played."""
    with wave.open(str(path), "rb") as w:
        return sound_span_seconds(w.readframes(w.getnframes()), w.getframerate(), threshold)


def sound_span_seconds(data: bytes, rate: int, threshold: int = 300) -> float:
    """Seconds from the first to the last 10 ms window above a threshold (pauses between words
    count as part of the sound)."""
    pcm = np.frombuffer(data, "<i2").astype(np.int32)
    win = rate // 100
    frames = pcm[: len(pcm) // win * win].reshape(-1, win)
    loud = np.flatnonzero(np.abs(frames).max(axis=1) > threshold)
    return float((loud[-1] - loud[0] + 1) / 100) if len(loud) else 0.0
