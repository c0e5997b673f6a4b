"""The README's laptop session, as written (issue 13, item 7): `run --keys` with the fake mic and
speaker against the simulator; nothing is said before `c` is pressed, and the call gets an answer."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from device.service.control import send_command
from device.sim.server import Simulator
from tools.polling import wait_until
from tools.service_process import REPO, TEST_KEY

QUESTION_SECONDS = 3.2   # device/assets/question.wav


def test_run_keys_press_c_and_get_an_answer(start_sim: Callable[..., Simulator], tmp_path: Path) -> None:
    sim = start_sim()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMS_")}
    env.update({   # the README's variables (its key is the simulator's), plus the start setting
        "ATOMS_URL": sim.url, "ATOMS_API_KEY": TEST_KEY, "ATOMS_AGENT_ID": "sim-agent",
        "ATOMS_AUDIO_BACKEND": "fake", "ATOMS_FAKE_CAPTURE_FILE": "device/assets/question.wav",
        "ATOMS_FAKE_CAPTURE_START": "call", "ATOMS_FAKE_PLAYBACK_FILE": str(tmp_path / "agent.wav"),
        "ATOMS_CONTROL_SOCKET": str(tmp_path / "atoms.sock"), "ATOMS_STATE_DIR": str(tmp_path / "state"),
        "PYTHONUNBUFFERED": "1",
    })
    proc = subprocess.Popen([sys.executable, "-m", "device", "run", "--keys"], env=env, cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    cond = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with cond:
                lines.append(line)
                cond.notify_all()

    def wait_for(pattern: str, timeout: float) -> bool:
        with cond:
            return cond.wait_for(lambda: any(re.search(pattern, line) for line in lines), timeout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_for(r"ready: button mode", 30), "".join(lines)
        assert wait_for(r"\[status: ", 5)          # the LED line is drawn from the start
        # A person presses `c` some seconds later: by then a file played at open would be over.
        sock = tmp_path / "atoms.sock"
        assert wait_until(lambda: sock.exists() and send_command(sock, "status")["status"]["counters"]
                          ["frames_captured"] > QUESTION_SECONDS * 100 + 50, 30)
        assert sim.audio_bytes_received == 0       # nothing sent, nothing said before the call
        assert proc.stdin is not None
        proc.stdin.write("c")
        proc.stdin.flush()
        assert wait_for(r"transcript agent: ", 30), "".join(lines)   # the agent answered
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        proc.wait(15)
