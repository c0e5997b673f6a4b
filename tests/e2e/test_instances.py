"""Two `run`s on one control socket or state directory (issue 13, item 4): the second refuses with
a clear message and exit status 75, and the first keeps its socket and keeps obeying `ctl`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from device.service.instance import EXIT_ALREADY_RUNNING
from tools.polling import wait_until
from tools.service_process import REPO, ServiceProcess

UNUSED_URL = "ws://127.0.0.1:9/agent"   # button mode: nothing connects until a call


def test_a_second_instance_refuses_and_the_first_keeps_its_socket(tmp_path: Path) -> None:
    first = ServiceProcess(tmp_path, UNUSED_URL).start()
    try:
        assert first.proc is not None
        socket_inode = first.socket.stat().st_ino
        for name, overrides in (("same socket", {"state_dir": tmp_path / "other-state"}),
                                ("same state dir", {"control_socket": tmp_path / "other.sock"}),
                                ("both", {})):
            second = ServiceProcess(tmp_path, UNUSED_URL, **overrides)
            result = subprocess.run([sys.executable, "-m", "device", "run"], env=second.env, cwd=REPO,
                                    capture_output=True, text=True, timeout=30)
            out = result.stdout + result.stderr
            assert result.returncode == EXIT_ALREADY_RUNNING, (name, out)
            assert f"another atoms-appliance (process {first.proc.pid})" in out, out
            assert "Traceback" not in out and "ready:" not in out
        # The first one's socket is the same file and it still obeys.
        assert first.socket.stat().st_ino == socket_inode
        assert first.ctl("mute") == {"ok": True, "cmd": "mute"}
        assert wait_until(lambda: first.status()["muted"] is True, 10), first.output()
        assert first.stop() == 0
    finally:
        first.close()
