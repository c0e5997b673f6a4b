"""`atoms-appliance` (also `python -m device`): run, demo, sim, ctl, config, devices, doctor."""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import sys
from pathlib import Path
from typing import Any

from device.service.settings import EXIT_CONFIG, ConfigError, Settings, config_file_warnings, load_settings


def _load(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from device.service.startup import StartupClock

    startup = StartupClock()
    from device.service.logs import setup_logging
    from device.service.supervisor import ApplianceService

    startup.mark("service imports")
    overrides: dict[str, Any] = {}
    if args.keys:
        overrides["gpio_backend"] = "keyboard"   # the controls backend, built by hw.registry as any other
    settings = _load(args, **overrides)
    secret = settings.api_key.get_secret_value() if settings.api_key else ""
    setup_logging(settings.log_level, settings.log_format, secrets=[secret])
    # The systemd watchdog kills with SIGABRT: let every thread's stack reach the journal.
    faulthandler.enable()
    for warning in config_file_warnings(getattr(args, "config", None)):
        logging.getLogger("device.service.settings").warning("%s", warning)
    # Short GIL slices: a busy Python thread must not delay the audio threads' next frame by the
    # default 5 ms (DESIGN "Facts measured": one CPU-bound thread pushes APM p99 to ~10 ms).
    sys.setswitchinterval(0.001)
    # One CPU for the whole process, before any thread starts (device/cpu.py says why).
    from device.service.cpu import pin_process

    pin_process(settings.cpu_affinity)
    startup.mark("settings")
    service = ApplianceService(settings, startup=startup)
    return service.run()


def cmd_demo(args: argparse.Namespace) -> int:
    from device.demo import run_demo

    return run_demo(Path(args.out), timeout=args.timeout)


def cmd_sim(args: argparse.Namespace, rest: list[str]) -> int:
    from device.sim.server import main as sim_main

    return sim_main(rest)


def cmd_ctl(args: argparse.Namespace) -> int:
    from device.service.control import send_command

    socket_path = Path(args.socket) if args.socket else _load(args).control_socket
    try:
        reply = send_command(socket_path, args.command.replace("-", "_"))
    except PermissionError as exc:
        raise PermissionError(exc.errno, exc.strerror, str(socket_path)) from None
    except OSError as exc:
        print(f"cannot reach the service at {socket_path}: {exc}", file=sys.stderr)
        return 1
    if args.json or args.command != "status" or not reply.get("ok"):
        print(json.dumps(reply, indent=2))
    else:
        print(format_status(reply["status"]))
    return 0 if reply.get("ok") else 1


def format_status(status: dict[str, Any]) -> str:
    """A human table of `ctl status`."""
    rows = [(k, v) for k, v in status.items() if k not in ("counters", "leds", "devices")]
    rows += [(f"device.{k}", v) for k, v in status.get("devices", {}).items()]
    rows += [(f"led.{k}", v) for k, v in status.get("leds", {}).items()]
    rows += [(f"counter.{k}", v) for k, v in status.get("counters", {}).items()]
    width = max(len(k) for k, _ in rows) if rows else 0
    return "\n".join(f"{k.ljust(width)}  {_human(v)}" for k, v in rows)


def _human(value: Any) -> str:
    """A status value for people: yes/no, '-' for nothing, lists and dicts on one line."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def cmd_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    print(json.dumps(settings.redacted(), indent=2, default=str))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from device.doctor.devices import format_devices
    from hw.alsa import list_devices

    try:  # mark the configured PCMs; the listing is still useful with broken settings
        settings: Settings | None = _load(args)
    except ConfigError:
        settings = None
    print(format_devices(list_devices(), settings.capture_device if settings else None,
                         settings.playback_device if settings else None), end="")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from device.doctor.runner import main as doctor_main

    return doctor_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atoms-appliance", description=__doc__)
    sub = parser.add_subparsers(dest="command_name", required=True)
    run = sub.add_parser("run", help="run the appliance (the systemd service runs this)")
    run.add_argument("--config", type=Path, help="config.toml (default /etc/atoms-appliance/config.toml)")
    run.add_argument("--keys", action="store_true",
                     help="keyboard as buttons, LEDs drawn in the terminal (gpio_backend = keyboard)")
    demo = sub.add_parser("demo", help="fake hardware against the bundled local agent")
    demo.add_argument("--out", default="demo-out", help="where to write agent.wav and stats")
    demo.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    sub.add_parser("sim", help="the local agent simulator (see `sim --help`)", add_help=False)
    ctl = sub.add_parser(
        "ctl", help="control a running service",
        description="Send one command to the running service over its control socket. call, hangup, "
        "mute, unmute, talk-start, talk-stop: as the buttons do. status: the service's state and "
        "counters. dump-audio: write the debug recording (the last seconds of raw mic, processed mic "
        "and speaker reference) into ATOMS_DEBUG_RECORD_DIR now and print the files and their "
        "lengths; fails if that setting is unset (SIGUSR1 to the service does the same). Exit "
        "status 1 when the service refuses or cannot be reached.")
    ctl.add_argument("command", choices=["call", "hangup", "mute", "unmute", "talk-start", "talk-stop", "status",
                                         "dump-audio"])
    ctl.add_argument("--socket", help="control socket path (default from settings)")
    ctl.add_argument("--json", action="store_true", help="machine-readable status")
    ctl.add_argument("--config", type=Path)
    cfg = sub.add_parser("config", help="print the effective settings (secrets redacted)")
    cfg.add_argument("--config", type=Path)
    sub.add_parser("devices", help="list ALSA cards and PCMs, marking which suit the mic and the speaker")
    doctor = sub.add_parser("doctor", help="check settings, clock, network, agent, audio and GPIO; --audio "
                            "also meters the mic and measures the echo")
    doctor.add_argument("--config", type=Path, help="config.toml (default /etc/atoms-appliance/config.toml)")
    doctor.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
    doctor.add_argument("--audio", action="store_true",
                        help="also meter the mic and run the echo test (plays chirps through the speaker)")
    doctor.add_argument("--seconds", type=float, default=3.0, help="how long the mic meter runs (default 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        return cmd_sim(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "demo": cmd_demo, "ctl": cmd_ctl, "config": cmd_config,
                "devices": cmd_devices, "doctor": cmd_doctor}
    try:
        return handlers[args.command_name](args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except PermissionError as exc:
        if args.command_name == "run":
            raise   # the service's own files: a traceback in the journal, not advice to a person
        # The config or the control socket of an installed service, used by someone outside its group.
        from device.service.access import denied_message

        print(denied_message(exc.filename), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
