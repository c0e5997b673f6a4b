"""`atoms-appliance doctor`: a checklist a person can act on, and `--json` for machines.

Each line is PASS, WARN, FAIL (or skip) with what was found and, when something is wrong, the fix in
one sentence. The exit status is 1 when any line FAILs, else 0. The checks, in order:

    settings, clock, dns, tls (tcp for ws://), agent, microphone, speaker, gpio, dsp
    and with --audio: mic level (a live meter), echo, clock drift, echo reduction

Checks live in `doctor_checks` (no sound card), `doctor_devices` (sound devices) and
`doctor_audio`/`doctor_echo` (measurements); `DoctorEnv` holds every dependency they take, so
tests swap the clock, the resolver, the /proc tree or the audio backend. Everything runs on the
calling (main) thread; the key is removed from every line and from the JSON by a `Redactor`.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from device.audio.formats import DSP_RATE
from device.core.events import CallMode
from device.doctor import checks, network, service
from device.doctor.audio import AudioOptions, run_audio
from device.doctor.core import (
    CheckResult,
    Redactor,
    Status,
    describe_exception,
    failed,
    format_result,
    quiet_libraries,
    run_check,
    summary,
    to_json,
)
from device.doctor.devices import Direction, check_audio_device
from device.doctor.meter import LiveLine
from device.service.credentials import unit_key
from device.service.settings import ConfigError, Settings, load_settings, setting_warnings
from device.session.config import SessionConfig
from hw.audio import AudioBackend
from hw.controls import Controls
from hw.registry import audio_backend_from_settings, controls_from_settings

log = logging.getLogger(__name__)


def _session_config(settings: Settings) -> SessionConfig:
    from device.service.wiring import session_config

    return session_config(settings)


@dataclass
class DoctorEnv:
    """Every dependency of the checklist, real by default (built and used on the main thread)."""

    load_settings: Callable[[], Settings] = load_settings
    config_warnings: Callable[[], list[str]] = setting_warnings
    now: Callable[[], float] = time.time
    build_time: Callable[[], float] = checks.package_build_time
    synchronized: Callable[[], bool | None] = checks.time_synchronized
    resolve: Callable[..., list[Any]] = socket.getaddrinfo
    connect: Callable[..., socket.socket] = socket.create_connection
    tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context
    open_ws: Callable[[SessionConfig], Any] = network.open_websocket
    audio_backend: Callable[[Settings], AudioBackend] = audio_backend_from_settings
    controls: Callable[[Settings], Controls] = controls_from_settings
    probe: checks.ProbeRunner = checks.run_probe
    proc_root: Path = Path("/proc")
    # The running service's status over its control socket (None: no service answers).
    service_status: service.StatusReader = service.read_status
    sleep: Callable[[float], None] = time.sleep
    # Why the unit's key could not be read here (a person's shell has no $CREDENTIALS_DIRECTORY).
    key_problem: str | None = None
    extra_secrets: list[str] = field(default_factory=list)


class Checklist:
    """Runs checks one by one on the main thread, showing each as it runs (on a terminal) and its
    line when it ends (always); collects the results."""

    def __init__(self, live: LiveLine, redactor: Redactor) -> None:
        self.live = live
        self.redactor = redactor
        self.results: list[CheckResult] = []

    def run(self, name: str, what: str, check: Callable[[], CheckResult]) -> CheckResult:
        self.live.update(f"....  {name:<14}  {what}...")
        return self.add(run_check(name, check, self.redactor))

    def add(self, result: CheckResult) -> CheckResult:
        result = self.redactor.result(result)
        self.results.append(result)
        self.live.note(format_result(result))
        return result

    def skip(self, name: str, why: str) -> None:
        self.add(CheckResult.skip(name, f"not tried: {why}"))


def run_doctor(env: DoctorEnv, live: LiveLine, audio: bool = False,
               seconds: float = 3.0) -> tuple[list[CheckResult], dict[str, Any]]:
    """The whole checklist (and the audio tests with `audio`); returns the lines and extra data."""
    secrets = [os.environ.get("ATOMS_API_KEY", ""), *env.extra_secrets]
    redactor = Redactor(secrets)
    out = Checklist(live, redactor)
    settings_box: list[Settings | None] = [None]

    def settings_check() -> CheckResult:
        result, settings_box[0] = checks.check_settings(env.load_settings, env.config_warnings)
        loaded = settings_box[0]
        if env.key_problem and loaded is not None and loaded.api_key is None:
            return CheckResult.fail(result.name, "api_key is not set here, and the service's key could not "
                                    "be read", env.key_problem)
        return result

    result = out.run("settings", "loading the settings", settings_check)
    settings = settings_box[0]
    if settings is not None and settings.api_key is not None:
        # From here on the key itself is known: scrub it (and its URL forms) from every line.
        out.redactor = Redactor([*secrets, settings.api_key.get_secret_value()])
    out.run("clock", "reading the clock", lambda: checks.check_clock(env.now, env.build_time, env.synchronized))
    extra: dict[str, Any] = {}
    if settings is None:
        for name in ("dns", "tls", "agent", "microphone", "speaker", "gpio"):
            out.skip(name, "the settings are invalid")
    else:
        _network(out, env, settings, key_ok=result.status is not Status.FAIL)
        _hardware(out, env, settings)
    aec, noise = (settings.aec, bool(settings.noise_suppression or settings.auto_gain_dbfs)) if settings \
        else ("webrtc", True)
    out.run("dsp", "loading the echo canceller and noise suppressor",
            lambda: checks.check_dsp(aec, noise, env.probe))
    if settings is not None and settings.call_mode is CallMode.WAKE_WORD:
        loaded = settings
        out.run("wake word", "loading the wake word detector", lambda: checks.check_wake_word(loaded))
    if audio and settings is not None:
        options = AudioOptions(settings.audio_backend, settings.sample_rate, settings.period_ms,
                               settings.playback_buffer_periods, settings.aec, settings.half_duplex, seconds,
                               settings.echo_drift_ppm, settings.residual_echo, settings.adaptive_half_duplex,
                               settings.noise_suppression)
        try:
            results, extra["audio"] = run_audio(options, lambda: env.audio_backend(settings), live)
        except Exception as exc:
            log.debug("audio tests raised", exc_info=True)
            results = [CheckResult.fail("audio", f"the audio test failed: {describe_exception(exc)}",
                                        "report this with the output of `atoms-appliance doctor --audio --json`")]
        for item in results:
            out.add(item)
    return out.results, out.redactor.data(extra)


def _network(out: Checklist, env: DoctorEnv, settings: Settings, key_ok: bool) -> None:
    host, _port, tls = network.endpoint(settings.url)
    addresses: list[network.Address] = []

    def dns() -> CheckResult:
        result, found = network.check_dns(settings.url, env.resolve)
        addresses.extend(found)
        return result

    name = "tls" if tls else "tcp"
    if out.run("dns", f"resolving {host}", dns).status is Status.FAIL:
        out.skip(name, "the host does not resolve")
        out.skip("agent", "the host does not resolve")
        return
    timeout = min(settings.connect_timeout, 10.0)
    reached = out.run(name, f"connecting to {host}", lambda: network.check_endpoint(
        settings.url, addresses, timeout, env.connect, env.tls_context))
    if reached.status is Status.FAIL:
        out.skip("agent", "the endpoint is unreachable")
    elif not key_ok:
        out.skip("agent", "the key or agent id is not set")
    else:
        out.run("agent", "opening a session", lambda: network.check_agent(_session_config(settings), env.open_ws))


def _hardware(out: Checklist, env: DoctorEnv, settings: Settings) -> None:
    snapshots = service.service_snapshots(settings.control_socket, env.service_status, env.sleep)
    if snapshots is not None:
        # The service holds the devices: ask it rather than find them busy.
        first, second = snapshots
        out.run("microphone", "asking the running service",
                lambda: service.check_device_in_service("microphone", "capture", first, second))
        out.run("speaker", "asking the running service",
                lambda: service.check_device_in_service("speaker", "playback", first, second))
        out.run("gpio", "asking the running service", lambda: service.check_gpio_in_service(second, checks.gpio_fix))
        return
    backend: list[AudioBackend] = []

    def device(direction: Direction, rate: int) -> CheckResult:
        with quiet_libraries(f"opening the {direction} device"):
            if not backend:
                backend.append(env.audio_backend(settings))
            return check_audio_device(direction, backend[0], rate, settings.period_ms,
                                      settings.playback_buffer_periods, env.proc_root)

    def gpio() -> CheckResult:
        with quiet_libraries("claiming the pins"):
            return checks.check_gpio(settings.gpio_backend, lambda: env.controls(settings))

    out.run("microphone", f"opening {settings.capture_device!r}", lambda: device("capture", DSP_RATE))
    out.run("speaker", f"opening {settings.playback_device!r}", lambda: device("playback", settings.sample_rate))
    if backend:
        backend[0].close()
    out.run("gpio", "claiming the pins", gpio)


def main(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """`atoms-appliance doctor [--config FILE] [--json] [--audio] [--seconds S]`."""
    stream = stdout if stdout is not None else sys.stdout
    config: Path | None = getattr(args, "config", None)
    # Outside the unit, the key the service uses is its systemd credential: read it as the unit
    # gets it (root), or tell the person how to run doctor so that it can.
    found = unit_key()
    overrides = {"api_key": found.key} if found.key else {}
    if not logging.getLogger().handlers:
        # Library warnings go to stderr, never the key: the same redacting handler as the service,
        # told the key from wherever it comes (a credential file too), when the settings load.
        from device.service.logs import setup_logging

        try:
            key = load_settings(config, **overrides).api_key
        except ConfigError:
            key = None
        setup_logging("WARNING", secrets=[os.environ.get("ATOMS_API_KEY", ""), found.key or "",
                                          key.get_secret_value() if key is not None else ""])
    env = DoctorEnv(load_settings=lambda: load_settings(config, **overrides),
                    config_warnings=lambda: setting_warnings(config), key_problem=found.problem,
                    extra_secrets=[found.key] if found.key else [])
    # With --json, stdout carries only the JSON document; a terminal on stderr still sees progress.
    live = LiveLine(sys.stderr, enabled=sys.stderr.isatty()) if args.json else LiveLine(stream)
    started = time.monotonic()
    results, extra = run_doctor(env, live, audio=args.audio, seconds=args.seconds)
    elapsed = time.monotonic() - started
    live.clear()
    if args.json:
        stream.write(to_json(results, elapsed, extra) + "\n")
    else:
        stream.write(summary(results, elapsed) + "\n")
    stream.flush()
    return 1 if failed(results) else 0

