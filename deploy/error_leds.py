#!/usr/bin/env python3
"""Show the "service failed" LED pattern until stopped: run by atoms-appliance-failed.service.

systemd starts this through the main unit's OnFailure= when atoms-appliance gave up (restarts
exhausted, or exit status 78 for a configuration error). A headless appliance has no other way
to say "I am broken": the status LED blinks fast, and the red mute LED is on, which is the truth
(no audio leaves the device while the service is down). The speaking LED is off.

Deliberately standalone: it needs only the standard library and gpiozero (from the service's
venv), and never imports the `device` package, so a bug or a broken configuration that killed the
service cannot stop the error pattern too. It reads only the LED pins from config.toml and falls
back to the default pins when the file is missing or does not parse.

Installed as /opt/atoms-appliance/libexec/atoms-appliance-error-leds by deploy/install.sh.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("atoms-appliance-error-leds")

DEFAULT_CONFIG: Final = Path("/etc/atoms-appliance/config.toml")
#: LED settings and their defaults (BCM numbers), as in the service's settings.
DEFAULT_PINS: Final[dict[str, int]] = {
    "status_led_pin": 22,
    "mute_led_pin": 23,
    "speaking_led_pin": 24,
}
#: Fast blink, the same rhythm as the service's hardware-error pattern.
BLINK_ON_S: Final = 0.1
BLINK_OFF_S: Final = 0.1


def load_settings(config: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The LED pins and GPIO backend: defaults < config.toml < ATOMS_* environment.

    A key may sit at the top level or in a [gpio] table. Unreadable or invalid TOML is logged and
    ignored: the defaults are a better guess than no LEDs at all.
    """
    settings: dict[str, Any] = dict(DEFAULT_PINS, gpio_backend="gpiozero")
    try:
        with config.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        data = {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log.warning("cannot read %s (%s); using the default LED pins", config, exc)
        data = {}
    tables = [data] + [v for k, v in data.items() if k == "gpio" and isinstance(v, dict)]
    for key in settings:
        for table in tables:
            if key in table:
                settings[key] = table[key]
        env = environ.get("ATOMS_" + key.upper())
        if env is not None:
            settings[key] = env
    return settings


def pin_number(value: Any) -> int | None:
    """A BCM pin number from a setting, or None when the LED is disabled or the value is junk."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def run(settings: Mapping[str, Any], stop: threading.Event, pin_factory: Any = None) -> int:
    """Drive the error pattern until `stop` is set, then turn the LEDs off. Returns an exit code."""
    backend = str(settings.get("gpio_backend", "gpiozero"))
    if backend in ("none", "keyboard"):   # keyboard: terminal keys, the LEDs were a status line
        log.info("gpio_backend is %s: no LEDs to drive", backend)
        return 0
    from gpiozero import LED  # imported late: --help works without gpiozero

    if pin_factory is None and backend == "mock":
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()
    leds: dict[str, Any] = {}
    try:
        for key in DEFAULT_PINS:
            pin = pin_number(settings.get(key))
            if pin is None:
                continue
            try:
                leds[key] = LED(pin, pin_factory=pin_factory)
            except Exception as exc:  # noqa: BLE001 - any pin failure must not stop the others
                log.warning("cannot drive %s on GPIO%s: %s", key, pin, exc)
        if "status_led_pin" in leds:
            leds["status_led_pin"].blink(on_time=BLINK_ON_S, off_time=BLINK_OFF_S)
        if "mute_led_pin" in leds:
            leds["mute_led_pin"].on()
        if "speaking_led_pin" in leds:
            leds["speaking_led_pin"].off()
        log.info("showing the service-failed LED pattern on %s",
                 ", ".join(f"{k}=GPIO{settings[k]}" for k in leds) or "no pins")
        stop.wait()
    finally:
        for led in leds.values():
            try:
                led.off()
                led.close()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.debug("cannot release %s: %s", led, exc)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, log why the service failed, run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"configuration file (default: {DEFAULT_CONFIG})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    # systemd tells an OnFailure= unit why the monitored unit failed.
    monitor = {k: v for k, v in os.environ.items() if k.startswith("MONITOR_")}
    if monitor:
        log.info("atoms-appliance failed: %s (journalctl -u atoms-appliance for details)",
                 " ".join(f"{k}={v}" for k, v in sorted(monitor.items())))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    return run(load_settings(args.config, os.environ), stop)


if __name__ == "__main__":
    sys.exit(main())
