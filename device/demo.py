"""`make demo`: the appliance on fake hardware against the bundled local agent simulator.

Starts the simulator on a free loopback port, runs the real service (fake audio, `always` mode)
with a spoken question as the mic input, prints state changes and transcripts as they happen,
records the agent's answer to `demo-out/agent.wav`, and exits 0 once the answer has played.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from device.service.logs import setup_logging
from device.service.settings import load_settings

log = logging.getLogger(__name__)

QUESTION = "Hello! What are your opening hours today?"


def question_wav(out: Path) -> Path:
    """The spoken question: espeak-ng when installed, else the small bundled recording."""
    target = out / "question.wav"
    espeak = shutil.which("espeak-ng")
    if espeak:
        result = subprocess.run([espeak, "-s", "150", "-w", str(target), QUESTION],
                                capture_output=True, timeout=20, check=False)
        if result.returncode == 0 and target.exists():
            return target
    with resources.as_file(resources.files("device") / "assets" / "question.wav") as bundled:
        shutil.copy(bundled, target)
    return target


def run_demo(out: Path, timeout: float = 30.0) -> int:
    from device.service.supervisor import ApplianceService
    from device.sim.server import SimOptions, Simulator

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "state", ignore_errors=True)
    setup_logging("WARNING", "text", secrets=["sim-key"])
    question = question_wav(out)
    sim = Simulator(SimOptions(port=0))
    sim.start()
    print(f"demo: local agent simulator at {sim.url}")
    settings = load_settings(
        api_key="sim-key", agent_id="sim-agent", url=sim.url, audio_backend="fake",
        call_mode="always", gpio_backend="none", fake_capture_file=question,
        fake_playback_file=out / "agent.wav", control_socket=out / "control.sock",
        state_dir=out / "state", stats_file=out / "stats.json", earcons=False,
    )
    answered = threading.Event()
    service: ApplianceService | None = None

    def observe(kind: str, data: dict[str, Any]) -> None:
        stamp = f"{time.monotonic() - started:5.1f}s"
        if kind == "state":
            flags = " ".join(f for f in ("muted", "agent_speaking") if data.get(f))
            print(f"{stamp}  state: {data['call']} {flags}".rstrip(), flush=True)
        elif kind == "transcript":
            print(f"{stamp}  {data['role']:>5}: {data['text']}", flush=True)
            if data["role"] == "agent":
                answered.set()

    service = ApplianceService(settings, observer=observe)

    def finish() -> None:
        # After the agent's transcript, let the speaker play out what is still queued.
        if answered.wait(timeout):
            deadline = time.monotonic() + 10
            while len(service.jitter) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.1)
        service.request_stop()

    threading.Thread(target=finish, name="demo-finish", daemon=True).start()
    try:
        service.run()
    finally:
        sim.stop()
        sim.join(3)
    elapsed = time.monotonic() - started
    if not answered.is_set():
        print(f"demo: no answer within {timeout:.0f} s", file=sys.stderr)
        return 1
    stats = service.stats()
    print(f"demo: done in {elapsed:.1f} s; agent audio saved to {out / 'agent.wav'}; "
          f"capture-to-send p50 {stats['capture_to_send_ms']['p50']} ms, "
          f"p99 {stats['capture_to_send_ms']['p99']} ms; RSS {stats['rss_mb']} MB")
    return 0
