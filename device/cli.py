"""`atoms-appliance` (also `python -m device`): run, demo, sim, ctl, conversation, config, devices, doctor."""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from device.platform_support import unsupported
from device.service.settings import EXIT_CONFIG, ConfigError, Settings, load_settings, setting_warnings

# 128 + SIGPIPE: what a shell reports for a tool whose reader went away (`ctl status | head`).
EXIT_BROKEN_PIPE = 141
# The commands that need the audio libraries, which exist for 64-bit platforms only.
NEEDS_SUPPORTED_PLATFORM = frozenset({"run", "demo", "doctor"})


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
    controls = None
    log_stream = None
    if args.keys:
        from hw.keyboard import KeyboardControls
        from hw.registry import controls_from_settings

        # Built here (the same registry call the service makes) so the log can be drawn above
        # its LED line; handed to the service, which then builds no second one.
        controls = controls_from_settings(settings)
        if isinstance(controls, KeyboardControls):
            log_stream = controls.above(sys.stderr)   # log lines scroll above the LED line
    setup_logging(settings.log_level, settings.log_format, secrets=[secret], stream=log_stream)
    # The systemd watchdog kills with SIGABRT: let every thread's stack reach the journal.
    faulthandler.enable()
    for warning in setting_warnings(getattr(args, "config", None)):
        logging.getLogger("device.service.settings").warning("%s", warning)
    # Short GIL slices: a busy Python thread must not delay the audio threads' next frame by the
    # default 5 ms (DESIGN "Facts measured": one CPU-bound thread pushes APM p99 to ~10 ms).
    sys.setswitchinterval(0.001)
    # One CPU for the whole process: the unit's CPUAffinity= pins it; say what we got
    # (device/service/cpu.py says why one CPU).
    from device.service.cpu import check_affinity

    check_affinity(settings.cpu_affinity)
    from device.service.control import ControlSocketError
    from device.service.instance import EXIT_ALREADY_RUNNING, AlreadyRunning

    startup.mark("settings")
    service = ApplianceService(settings, controls=controls, startup=startup)
    try:
        return service.run()
    except AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except ControlSocketError as exc:
        print(f"config error: ATOMS_CONTROL_SOCKET (config.toml: control_socket): {exc}; fix: choose a "
              "path in a folder this user may write (the service unit gets /run/atoms-appliance)",
              file=sys.stderr)
        return EXIT_CONFIG


def cmd_demo(args: argparse.Namespace) -> int:
    from device.demo import run_demo

    return run_demo(Path(args.out), timeout=args.timeout)


def cmd_sim(args: argparse.Namespace, rest: list[str]) -> int:
    from device.sim.server import main as sim_main

    return sim_main(rest)


def cmd_ctl(args: argparse.Namespace) -> int:
    from device.service.control import send_command

    socket_path = Path(args.socket) if args.socket else _load(args).control_socket
    if args.command == "watch":
        return _watch(socket_path, args)
    fields: dict[str, Any] = {}
    if args.command == "say":
        if not args.text:
            print('ctl say needs the text: atoms-appliance ctl say "Hello"', file=sys.stderr)
            return 2
        fields["text"] = " ".join(args.text)
    elif args.command == "volume" and len(args.text) == 1:
        fields["level"] = args.text[0]
    elif args.text:
        print(f"ctl {args.command} takes no further arguments", file=sys.stderr)
        return 2
    try:
        reply = send_command(socket_path, args.command.replace("-", "_"), **fields)
    except PermissionError as exc:
        raise PermissionError(exc.errno, exc.strerror, str(socket_path)) from None
    except OSError as exc:
        print(f"cannot reach the service at {socket_path}: {exc}", file=sys.stderr)
        return 1
    if args.json or args.command != "status" or not reply.get("ok"):
        print(json.dumps(reply, indent=2))
        if reply.get("note") and not args.json:
            print(f"note: {reply['note']}", file=sys.stderr)   # the command changed nothing
    else:
        print(format_status(reply["status"]))
    return 0 if reply.get("ok") else 1


def _watch(socket_path: Path, args: argparse.Namespace) -> int:
    from device.service.control import watch

    try:
        for item in watch(socket_path, levels=args.levels):
            if args.json:
                print(json.dumps(item), flush=True)
            elif "snapshot" in item:
                print(format_status(item["snapshot"]), flush=True)
            elif not item.get("ok", True):
                print(item.get("error"), file=sys.stderr)
                return 1
            else:
                print(format_event(item), flush=True)
    except OSError as exc:
        print(f"cannot reach the service at {socket_path}: {exc}", file=sys.stderr)
        return 1
    return 0


def format_event(event: dict[str, Any]) -> str:
    """One stream event for people: time, type, then its fields."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("t", 0)))
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("v", "seq", "t", "type"))
    return f"{stamp} {event.get('type')} {fields}".rstrip()


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


def cmd_conversation(args: argparse.Namespace) -> int:
    from device.service.call_records import load_last_call_id
    from device.session.conversation import (
        ConversationError,
        ConversationSource,
        fetch_conversation,
        format_transcript,
    )

    settings = _load(args)
    if settings.api_key is None or not settings.api_key.get_secret_value().strip():
        raise ConfigError("config error: ATOMS_API_KEY (config.toml: api_key) is not set; fix: set it in the "
                          "systemd credential atoms_api_key or ATOMS_API_KEY")
    call_id = args.call_id
    if call_id == "last":
        call_id = load_last_call_id(settings.state_dir)
        if call_id is None:
            print(f"no call yet: {settings.state_dir}/last_call.json is missing (the service writes it "
                  "when a call starts)", file=sys.stderr)
            return 1
    source = ConversationSource(url=settings.url, api_key=settings.api_key.get_secret_value(),
                                auth=settings.auth)
    try:
        record = fetch_conversation(source, call_id)
    except ConversationError as exc:
        print(f"cannot fetch the conversation of {call_id}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2) if args.json else f"call {call_id}\n{format_transcript(record)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    for warning in setting_warnings(getattr(args, "config", None)):
        print(f"warning: {warning}", file=sys.stderr)
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
        "status 1 when the service refuses or cannot be reached. say TEXT: send typed text to the "
        "agent (input_text.send) during a call; an error outside one. volume [N|+N|-N]: the speaker "
        "level in percent, or set/change it (a short tone at the new level confirms). watch: the live event "
        "stream (call state, mute, volume, transcripts, calls started and ended...; docs/control-api.md) "
        "until the service stops or Ctrl-C.")
    ctl.add_argument("command", choices=["call", "hangup", "mute", "unmute", "talk-start", "talk-stop", "status",
                                         "dump-audio", "say", "volume", "watch"])
    ctl.add_argument("text", nargs="*", help="say: the text (several words are joined with spaces); "
                     "volume: N (0-100), +N or -N (none: print the level)")
    ctl.add_argument("--socket", help="control socket path (default from settings)")
    ctl.add_argument("--json", action="store_true", help="machine-readable status (watch: the raw lines)")
    ctl.add_argument("--levels", action="store_true",
                     help="watch: also the mic and speaker levels, ~10 a second")
    ctl.add_argument("--config", type=Path)
    conv = sub.add_parser(
        "conversation", help="print a call's transcript from the Atoms conversation log",
        description="Fetch GET /atoms/v1/conversation/{callId} from the host of ATOMS_URL (https; http "
        "for a ws:// simulator) with the service's key and print the transcript. CALL_ID 'last' (the "
        "default) is the last call the service started, kept in $ATOMS_STATE_DIR/last_call.json.")
    conv.add_argument("call_id", nargs="?", default="last", metavar="CALL_ID|last")
    conv.add_argument("--json", action="store_true", help="the record as it came, JSON")
    conv.add_argument("--config", type=Path)
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
    if args.command_name in NEEDS_SUPPORTED_PLATFORM and (reason := unsupported()) is not None:
        print(f"error: {reason}", file=sys.stderr)
        return EXIT_CONFIG
    handlers = {"run": cmd_run, "demo": cmd_demo, "ctl": cmd_ctl, "conversation": cmd_conversation,
                "config": cmd_config,
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
    except BrokenPipeError:
        # The reader (`| head`) went away: no traceback. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again (the recipe in Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
