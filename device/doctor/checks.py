"""The `doctor` checks of this machine: settings, clock, GPIO and the DSP libraries.

Each check is a function of its inputs and injectable dependencies (a settings loader, a clock, a
controls factory, a subprocess runner) returning a `CheckResult`, so tests drive every outcome
without hardware. They run on the CLI's main thread. The network checks are in `doctor_network`,
the sound devices in `doctor_devices`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from device.doctor.core import CheckResult
from device.service.redact import redact_url
from device.service.settings import ConfigError, Settings
from device.session.connection import MIN_SANE_TIME
from hw.controls import Controls
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)

CLOCK_TOLERANCE: Final = 86400.0  # a clock a day behind the install is still a plausible clock


# -- settings -------------------------------------------------------------------------------------
def check_settings(load: Callable[[], Settings],
                   warnings: Callable[[], list[str]] = list) -> tuple[CheckResult, Settings | None]:
    """Load the settings as the service does; FAIL names each bad field. The key is never shown."""
    name = "settings"
    try:
        settings = load()
    except ConfigError as exc:
        lines = [line.removeprefix("config error: ") for line in str(exc).splitlines() if line.strip()]
        return CheckResult.fail(name, " | ".join(lines),
                                "correct the setting(s) named above in config.toml or the ATOMS_* "
                                "environment (`atoms-appliance config` shows the effective values)"), None
    try:
        settings.require_agent()
    except ConfigError as exc:
        lines = [line.removeprefix("config error: ") for line in str(exc).splitlines() if line.strip()]
        return CheckResult.fail(name, " | ".join(lines),
                                "set the API key (systemd credential atoms_api_key or ATOMS_API_KEY) "
                                "and ATOMS_AGENT_ID"), settings
    detail = (f"key set, agent {settings.agent_id!r}, {redact_url(settings.url)}, audio {settings.audio_backend} "
              f"(mic {settings.capture_device!r}, speaker {settings.playback_device!r}), "
              f"gpio {settings.gpio_backend}, aec {settings.aec}")
    problems = warnings()
    if problems:
        return CheckResult.warn(name, f"{detail}; {problems[0]}", "see the warning: " + problems[0]
                                .split("fix: ", 1)[-1]), settings
    return CheckResult.passed(name, detail, agent_id=settings.agent_id, url=redact_url(settings.url)), settings


# -- clock ----------------------------------------------------------------------------------------
def package_build_time() -> float:
    """When this software got onto this machine: the newest mtime of the `device` package files.

    A clock earlier than that is certainly wrong (a Pi without an RTC that booted without time sync).
    """
    here = Path(__file__).resolve().parent
    times = [p.stat().st_mtime for p in here.glob("*.py")]
    return max(times) if times else 0.0


def time_synchronized(flag: Path = Path("/run/systemd/timesync/synchronized")) -> bool | None:
    """True when systemd-timesyncd says the clock is synchronized; None when it cannot tell."""
    if flag.exists():
        return True
    return False if flag.parent.exists() else None


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def check_clock(now: Callable[[], float] = time.time, build_time: Callable[[], float] = package_build_time,
                synchronized: Callable[[], bool | None] = time_synchronized) -> CheckResult:
    """The wall clock must be past 2026-01-01 (the session waits otherwise) and the install date."""
    name = "clock"
    current = now()
    fix = ("connect the network and wait for time sync (`timedatectl` shows 'System clock synchronized: "
           "yes'), or fit an RTC; TLS rejects every certificate while the clock is wrong")
    if current < MIN_SANE_TIME:
        return CheckResult.fail(name, f"the clock says {_utc(current)}, before any valid certificate "
                                f"(the service waits for time sync before connecting)", fix, now=current)
    built = build_time()
    if current < built - CLOCK_TOLERANCE:
        return CheckResult.fail(name, f"the clock says {_utc(current)}, before this software was installed "
                                f"({_utc(built)})", fix, now=current, built=built)
    synced = synchronized()
    note = {True: " (synchronized)", False: " (not synchronized yet)", None: ""}[synced]
    return CheckResult.passed(name, f"{_utc(current)}{note}", now=current, synchronized=synced)


# -- GPIO -----------------------------------------------------------------------------------------
def gpio_fix(problem: str) -> str:
    """The fix for a GPIO problem, from the driver's words."""
    text = problem.lower()
    if "in use" in text or "busy" in text:
        return ("another program holds the pin (the service? `systemctl stop atoms-appliance`): stop it, "
                "or move the part to a free pin (ATOMS_*_PIN)")
    if "not a raspberry pi" in text:
        return "set gpio_board = \"generic\" in config.toml to use the chip's line numbers as GPIO numbers"
    if "lgpio is not installed" in text or "factory" in text:
        return ("no usable GPIO here: on a Pi re-run deploy/install.sh --lgpio yes; on a laptop set "
                "ATOMS_GPIO_BACKEND=none or mock")
    if "ermission" in text or "can not open gpiochip" in text:
        return ("the service user may not open /dev/gpiochip*: it must be in the gpio group and the chip "
                "group gpio, mode 0660 (deploy/install.sh adds that udev rule where the OS has none)")
    if "gpiochip" in text:
        return "set gpio_chip in config.toml to a chip that exists (`ls /dev/gpiochip*`, `gpiodetect`)"
    return "check the pin numbers (BCM) in the settings and the wiring"


def check_gpio(backend: str, make_controls: Callable[[], Controls]) -> CheckResult:
    """Claim every configured pin (as the service would), read the buttons, release everything."""
    name = "gpio"
    if backend == "none":
        return CheckResult.passed(name, "skipped: gpio_backend = none (no buttons or LEDs)")
    if backend == "keyboard":
        return CheckResult.passed(name, "skipped: gpio_backend = keyboard (terminal keys, no pins)")
    try:
        controls = make_controls()
    except DeviceUnavailable as exc:
        text = str(exc)
        return CheckResult.fail(name, f"cannot claim {text}", gpio_fix(text))
    try:
        pins: dict[str, int] = dict(getattr(controls, "pins", {}))
        factory = getattr(controls, "factory", None)
        pressed = []
        for part in ("call", "mute"):
            # Buttons are wired to ground with the pull-up on: high at rest, low when pressed.
            if part in pins and factory is not None and not factory.pin(pins[part]).state:
                pressed.append(f"{part} (GPIO{pins[part]})")
        claimed = ", ".join(f"{part} GPIO{pin}" for part, pin in pins.items())
        detail = f"{backend} on {type(factory).__name__}: {claimed or 'no pins configured'}"
        if pressed:
            return CheckResult.warn(name, f"{detail}; reads pressed at rest: {', '.join(pressed)}",
                                    "check the button wiring (between the pin and GND) or release the button",
                                    pins=pins)
        return CheckResult.passed(name, f"{detail}; claimed, buttons released", pins=pins)
    finally:
        controls.close()


# -- DSP libraries --------------------------------------------------------------------------------
# Run in a child process: a wheel built for a newer CPU dies of SIGILL (and livekit's APM aborts
# on a bad frame), which no `except` can catch. Each step prints before and after, so a crash
# names the library that was running.
PROBE_CODE: Final = """
import json, sys
def say(**kw): print(json.dumps(kw), flush=True)
from device.audio.dsp import make_capture_dsp
from device.audio.formats import DSP_RATE, FRAME_BYTES
from importlib.metadata import version
for lib, dist, args in (("aec", "livekit", ("webrtc", 0, 0)), ("noise", "webrtc-noise-gain", ("off", 2, 0))):
    say(step=lib, state="start")
    try:
        dsp = make_capture_dsp(*args)
        dsp.reference(bytes(FRAME_BYTES), DSP_RATE)
        dsp.process(bytes(FRAME_BYTES))
        dsp.close()
        say(step=lib, state="ok", version=version(dist))
    except Exception as exc:
        say(step=lib, state="error", error=f"{type(exc).__name__}: {exc}"[:200])
"""
SIGNALS: Final = {4: "SIGILL (illegal instruction: the wheel needs a newer CPU)", 6: "SIGABRT (a native panic)",
                  11: "SIGSEGV (a native crash)", 7: "SIGBUS (a native crash)"}
ProbeRunner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


def run_probe(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def check_dsp(aec: str, noise_used: bool, runner: ProbeRunner = run_probe,
              probe_code: str = PROBE_CODE, timeout: float = 60.0) -> CheckResult:
    """Import both DSP libraries and process one frame each, in a child process (see PROBE_CODE)."""
    name = "dsp"
    try:
        proc = runner([sys.executable, "-c", probe_code], timeout)
    except subprocess.TimeoutExpired:
        return CheckResult.fail(name, f"loading the DSP libraries took over {timeout:.0f} s",
                                "check the CPU load and the SD card; then reinstall the package")
    steps: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
            steps[item["step"]] = item
        except (ValueError, KeyError, TypeError):
            continue
    used = {"aec": aec == "webrtc", "noise": noise_used}
    label = {"aec": "AEC (livekit)", "noise": "NS/AGC (webrtc-noise-gain)"}
    good, bad = [], []
    for lib in ("aec", "noise"):
        item = steps.get(lib, {})
        if item.get("state") == "ok":
            good.append(f"{label[lib]} {item.get('version', '')}".strip())
        elif item.get("state") == "start" and proc.returncode < 0:
            bad.append((lib, f"{label[lib]} killed the process: {SIGNALS.get(-proc.returncode, f'signal {-proc.returncode}')}"))
        elif item.get("state") == "error":
            bad.append((lib, f"{label[lib]}: {item.get('error')}"))
        elif not item:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            bad.append((lib, f"{label[lib]} not reached ({tail})"))
    if not bad:
        return CheckResult.passed(name, f"{', '.join(good)} process 10 ms frames on this CPU")
    detail = "; ".join(text for _, text in bad)
    fix = ("reinstall the package in its venv (`pip install --force-reinstall livekit webrtc-noise-gain`); "
           "a SIGILL means this CPU is too old for the wheel: set aec = off and noise_suppression = 0")
    if any(used[lib] for lib, _ in bad):
        return CheckResult.fail(name, detail, fix)
    return CheckResult.warn(name, f"{detail} (not used by the current settings)", fix)


# -- wake word ------------------------------------------------------------------------------------
def check_wake_word(settings: Settings, build: Callable[[Settings], object] | None = None) -> CheckResult:
    """`wake_word` mode: load the detector as the service will (its runtime and the model), once."""
    name = "wake word"
    if build is None:
        from device.service.wake_word import build_detector

        build = build_detector
    try:
        build(settings)
    except ConfigError as exc:
        return CheckResult.fail(name, str(exc).removeprefix("config error: ").split("; fix: ")[0],
                                str(exc).split("; fix: ", 1)[-1])
    model = settings.wake_word_model_file or settings.wake_word_model
    cutoff = settings.wake_word_cutoff if settings.wake_word_cutoff is not None else "the model's"
    return CheckResult.passed(name, f"model {model} loads (cutoff {cutoff}, refractory "
                              f"{settings.wake_word_refractory_seconds:g} s)", model=str(model))
