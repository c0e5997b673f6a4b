"""What the scenarios do to the installed appliance in a guest, as a person (or the hardware) would.

Buttons are gpio-sim lines pulled low and back (the chip's `sim_gpioN/pull`), LEDs are read from
the lines the service drives (`sim_gpioN/value`), the microphone is the capture side of the
snd-aloop card (the test plays into the other end) and the speaker's sound is recorded from the
loopback's other end. The agent is the project's simulator in the guest (atoms-systest-sim.service,
in its own network namespace); its JSON-lines event log is the record of what reached the agent.
"""
from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from tests.system.guest import Guest, GuestError
from tests.system.images import REPO

UNIT: Final = "atoms-appliance"
SIM_UNIT: Final = "atoms-systest-sim"
BIN: Final = "/usr/local/bin/atoms-appliance"
SIM_EVENTS: Final = "/var/lib/atoms-systest-sim/events.jsonl"
GPIO_SIM: Final = "/sys/devices/platform/gpio-sim.0/gpiochip*"
CALL_PIN: Final = 17
MUTE_PIN: Final = 27
LED_PINS: Final = {"status": 22, "mute": 23, "speaking": 24}
WHEELHOUSE: Final = "/mnt/wheelhouse"
CHECKOUT: Final = "/home/tester/atoms-appliance"
# The loopback card: the service captures from device 1 subdevice 0 (what is played into device 0
# subdevice 0) and plays into device 0 subdevice 1 (recorded from device 1 subdevice 1).
MIC_FEED: Final = "plughw:CARD=Loopback,DEV=0,SUBDEV=0"
SPEAKER_TAP: Final = "plughw:CARD=Loopback,DEV=1,SUBDEV=1"

# The guest's configuration, written before install.sh as a person setting up a board would
# (install.sh never overwrites it). Shorter pings and backoff than the defaults make the network
# scenario take seconds instead of a minute; everything else is the default.
CONFIG: Final = """\
# atoms-appliance on the system-test guest (tests/system/appliance.py)
agent_id = "sim-agent"
url = "ws://10.99.0.2:8765/atoms/v1/agent/connect"
capture_device = "plughw:CARD=Loopback,DEV=1,SUBDEV=0"
playback_device = "plughw:CARD=Loopback,DEV=0,SUBDEV=1"
ping_interval = 4.0
ping_timeout = 2.0
backoff_max = 4.0
"""
API_KEY: Final = "sim-key"
# Under software emulation the default capture DSP (AEC3 + noise suppression at 10 ms periods)
# does not keep up in real time: the live-audio scenarios run with these lighter settings, as a
# systemd drop-in (the one scenario on the default DSP removes it for its duration).
LIGHT_DSP_DROPIN: Final = "/etc/systemd/system/atoms-appliance.service.d/systest-light-dsp.conf"
LIGHT_DSP: Final = """\
# System test under emulation only: lighter DSP so that a TCG guest keeps up in real time.
[Service]
Environment=ATOMS_AEC=off ATOMS_NOISE_SUPPRESSION=0 ATOMS_PERIOD_MS=20 ATOMS_PLAYBACK_BUFFER_PERIODS=4
"""
# The unit's TimeoutStartSec=90 is for a Pi Zero 2 W. Under TCG on a shared 2-core host the start
# once took 92 s (python and imports 55 s, service imports 22 s; 10-15 s on an idle host), so
# systemd killed every start and the later scenarios all failed on load alone. Widened here, for
# the guest only; READY is still bounded by test_start_to_ready (READY_BOUND_S).
EMULATION_DROPIN: Final = "/etc/systemd/system/atoms-appliance.service.d/systest-emulation.conf"
EMULATION: Final = """\
# System test under emulation only: start-up under TCG on a loaded host can exceed 90 s.
[Service]
TimeoutStartSec=300
"""


@dataclass(frozen=True)
class LedSample:
    """Samples of one LED line over `seconds`: the `on` fraction and the level changes per second."""

    values: tuple[int, ...]
    seconds: float

    @property
    def on(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0

    @property
    def changes_per_second(self) -> float:
        changes = sum(1 for a, b in zip(self.values, self.values[1:]) if a != b)
        return changes / self.seconds if self.seconds > 0 else 0.0

    def pattern(self) -> str:
        """off | on | blink (0.5 s on/off: ~2 changes a second) | fast_blink (0.1 s: ~10)."""
        if self.on == 0:
            return "off"
        if self.on == 1:
            return "on"
        return "fast_blink" if self.changes_per_second > 5 else "blink"


# Samples the LED lines with bash builtins only (no fork per sample, so hundreds of samples a
# second even under emulation): prints the seconds sampled, then one "status mute speaking" line
# per sample.
LED_SAMPLER: Final = (
    "d=$(echo {chip}); start=$EPOCHREALTIME; end=$(( ${{start%.*}} + {seconds} )); "
    "while (( ${{EPOCHREALTIME%.*}} < end )); do "
    "read -r a < $d/sim_gpio22/value; read -r b < $d/sim_gpio23/value; read -r c < $d/sim_gpio24/value; "
    "printf '%s %s %s\\n' $a $b $c; done > {out}.tmp; "
    "now=$EPOCHREALTIME; echo $(( ${{now/./}} - ${{start/./}} )) > {out}; cat {out}.tmp >> {out}")


def parse_led_log(text: str) -> dict[str, LedSample]:
    lines = text.splitlines()
    seconds = int(lines[0]) / 1e6 if lines and lines[0].strip().isdigit() else 0.0
    rows = [line.split() for line in lines[1:] if len(line.split()) == 3]
    return {name: LedSample(tuple(int(r[i]) for r in rows), seconds) for i, name in enumerate(LED_PINS)}


def loud_seconds(wav: bytes, threshold_dbfs: float = -40.0) -> float:
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768
    window = rate // 10
    windows = samples[: len(samples) // window * window].reshape(-1, window)
    if not len(windows):
        return 0.0
    rms = np.sqrt((windows ** 2).mean(axis=1))
    return float((rms > 10 ** (threshold_dbfs / 20)).sum()) / 10


class Appliance:
    """The installed service in one guest, and the test's hands on its hardware and agent."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.install_seconds: float | None = None
        self.install_output = ""
        self.install_status: int | None = None

    # -- installing -------------------------------------------------------------------------------
    def copy_checkout(self) -> None:
        """The checkout as a person has it (tracked and new files, not .venv or caches)."""
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in filter(None, (f.decode() for f in files)):
                path = REPO / name
                if path.is_file():
                    tar.add(path, arcname=name)
        self.guest.run(f"rm -rf {CHECKOUT} && mkdir -p {CHECKOUT} && tar -xzf - -C {CHECKOUT}",
                       user="tester", input=buf.getvalue())

    def install(self) -> None:
        """deploy/install.sh from the checkout, as the person `tester` with sudo; the config is
        written first, as the hardware guide has one do, and the wheels come from the wheelhouse."""
        self.guest.put(CONFIG.encode(), "/home/tester/config.toml", user="tester")
        self.guest.put(API_KEY.encode() + b"\n", "/home/tester/api-key.txt", user="tester", mode="0600")
        self.guest.run("sudo install -d -m 0750 /etc/atoms-appliance && "
                       "sudo install -m 0640 ~/config.toml /etc/atoms-appliance/config.toml", user="tester")
        self.guest.put(LIGHT_DSP.encode(), LIGHT_DSP_DROPIN)
        self.guest.put(EMULATION.encode(), EMULATION_DROPIN)
        start = time.monotonic()
        result = self.guest.run(
            f"cd {CHECKOUT} && sudo deploy/install.sh --lgpio yes --api-key-file ~/api-key.txt "
            f"--pip-args '--no-index --find-links {WHEELHOUSE}' 2>&1", user="tester", timeout=1500, check=False)
        self.install_seconds = time.monotonic() - start
        self.install_output = result.stdout
        self.install_status = result.returncode
        # As the hardware guide has a person do to use `ctl` without sudo, and log in again.
        self.guest.run(f"sudo usermod -a -G {UNIT} tester", user="tester")
        self.guest.logout("tester")
        self.guest.run(f"systemctl start {SIM_UNIT}")
        # Until the simulator listens (its Python start-up takes ~10 s under emulation), it would
        # compete with whatever the first scenario measures.
        self.guest.run("timeout 120 sh -c 'until ip netns exec agent ss -Hltn sport = :8765 | grep -q .; "
                       "do sleep 0.5; done'", timeout=150)

    # -- the unit ---------------------------------------------------------------------------------
    def show(self, *props: str) -> dict[str, str]:
        out = self.guest.sh(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def wait_ready(self, timeout: float = 120) -> float:
        """Wait until the unit is active/running (Type=notify: READY=1 was sent); seconds waited."""
        start = time.monotonic()
        while True:
            state = self.show("ActiveState", "SubState")
            if state.get("ActiveState") == "active" and state.get("SubState") == "running":
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise GuestError(f"{UNIT} not ready after {timeout:.0f} s: {self.show('ActiveState', 'SubState', 'Result', 'NRestarts', 'StatusText')}\n{self.journal(40)}")
            time.sleep(0.5)

    def journal(self, lines: int = 30, unit: str = UNIT) -> str:
        return self.guest.sh(f"journalctl -u {unit} -n {lines} --no-pager -o short-monotonic", check=False)

    def cursor(self) -> str:
        return self.guest.sh("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")

    def journal_since(self, cursor: str, unit: str = UNIT) -> str:
        return self.guest.sh(f"journalctl -u {unit} --after-cursor={shlex.quote(cursor)} --no-pager -o cat",
                             check=False)

    # -- control and status -------------------------------------------------------------------------
    def ctl(self, command: str, user: str = "tester", check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.guest.run(f"{BIN} ctl {command}", user=user, check=check)

    def status(self) -> dict[str, Any]:
        reply = json.loads(self.guest.sh(f"{BIN} ctl status --json"))
        status: dict[str, Any] = reply["status"]
        return status

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        start = time.monotonic()
        status: dict[str, Any] = {}
        while time.monotonic() - start < timeout:
            try:
                status = self.status()
            except (GuestError, ValueError, KeyError):
                status = {}
            if status and predicate(status):
                return status
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {timeout:.0f} s; last status: {status}")

    def idle(self) -> None:
        """Back to a known state between scenarios: ready, no call, not muted."""
        self.wait_ready()
        status = self.wait_status(lambda s: True, 30, "status answers")
        if status.get("muted"):
            self.ctl("unmute")
        if status.get("call_state") != "idle":
            self.ctl("hangup")
        self.wait_status(lambda s: s["call_state"] == "idle" and not s["muted"], 30, "idle and unmuted")

    # -- hardware -----------------------------------------------------------------------------------
    def press(self, pin: int, hold: float = 0.2) -> None:
        """Press and release a button (to ground, against the pull-up: the line goes low)."""
        self.guest.run(f"p=$(echo {GPIO_SIM}/sim_gpio{pin}/pull); echo pull-down > $p; sleep {hold}; "
                       "echo pull-up > $p")

    def leds(self, seconds: int = 2) -> dict[str, LedSample]:
        """Sample the LED lines for `seconds` (whole seconds)."""
        script = LED_SAMPLER.format(chip=GPIO_SIM, seconds=seconds, out="/tmp/leds-now.log")
        self.guest.run(f"bash -c {shlex.quote(script)}", timeout=seconds + 60)
        return parse_led_log(self.guest.sh("cat /tmp/leds-now.log"))

    def start_led_log(self, seconds: int, path: str) -> None:
        """Sample the LED lines in the background into `path` (for a state too short to catch
        with a round trip, such as the agent's two-second reply)."""
        script = LED_SAMPLER.format(chip=GPIO_SIM, seconds=seconds, out=path)
        self.guest.run(f"nohup bash -c {shlex.quote(script)} >/dev/null 2>&1 &")

    def read_led_log(self, path: str, timeout: int = 60) -> dict[str, LedSample]:
        """The samples of `start_led_log`, once its time is up (it writes `path` at the end)."""
        return parse_led_log(self.guest.sh(f"timeout {timeout} sh -c 'until [ -s {path} ]; do sleep 0.5; done'; "
                                           f"cat {path}", timeout=timeout + 30))

    def led_patterns(self, seconds: int = 2) -> dict[str, str]:
        return {name: sample.pattern() for name, sample in self.leds(seconds).items()}

    def speech_wav(self, text: str, path: str) -> None:
        """Speech at the service's capture format (16 kHz mono S16): the loopback pair runs at the
        format its first opener (the service) chose, and a mismatched second opener gets EIO."""
        self.guest.run(f"espeak-ng -w /tmp/speech-raw.wav {shlex.quote(text)} && "
                       f"sox /tmp/speech-raw.wav -r 16000 -c 1 -b 16 {path} && rm /tmp/speech-raw.wav")

    def say(self, path: str, trailing_silence: float = 2.0) -> None:
        """Play a WAV into the microphone, then silence so that the agent's VAD hears the end."""
        self.guest.run(f"aplay -q -D {MIC_FEED} {path} && "
                       f"aplay -q -D {MIC_FEED} -t raw -f S16_LE -r 16000 -c 1 -d {trailing_silence:g} /dev/zero",
                       timeout=120)

    def record_speaker(self, seconds: float, path: str) -> str:
        """Start recording the speaker in the background; returns the recorder's PID."""
        return self.guest.sh(f"nohup arecord -q -D {SPEAKER_TAP} -f S16_LE -r 16000 -c 1 -d {int(seconds)} "
                             f"{path} >/dev/null 2>&1 & echo $!")

    def fetch(self, path: str) -> bytes:
        result = subprocess.run([*self.guest.ssh_command(), f"cat {shlex.quote(path)}"], capture_output=True,
                                timeout=120, check=True)
        return result.stdout

    def loud_seconds(self, path: str) -> float:
        """How much of a WAV recorded in the guest is sound: 100 ms windows above -40 dBFS RMS."""
        return loud_seconds(self.fetch(path))

    # -- the agent (simulator) ---------------------------------------------------------------------
    def sim_mark(self) -> int:
        """The number of simulator events so far: later reads start after it."""
        out = self.guest.sh(f"wc -l < {SIM_EVENTS} 2>/dev/null || echo 0")
        return int(out or 0)

    def sim_events(self, since: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
        out = self.guest.sh(f"tail -n +{since + 1} {SIM_EVENTS} 2>/dev/null || true")
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in events if kind is None or e["kind"] == kind]

    def wait_sim(self, kind: str, since: int, timeout: float, count: int = 1) -> list[dict[str, Any]]:
        start = time.monotonic()
        while True:
            events = self.sim_events(since, kind)
            if len(events) >= count:
                return events
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the agent saw {len(events)} '{kind}' event(s), not {count}, "
                                     f"within {timeout:.0f} s; its events since: "
                                     f"{[e['kind'] for e in self.sim_events(since)]}")
            time.sleep(0.5)

    # -- files for the report -----------------------------------------------------------------------
    def save(self, command: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.guest.run(command, check=False).stdout)
