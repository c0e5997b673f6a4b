"""Each scenario family fails when its behaviour breaks: the product is broken on purpose in the
guest (one line of the installed code changed, or a unit drop-in), the family's scenario is run
and must fail, then the product is restored. Opt-in (ATOMS_SYSTEM_MUTATIONS=1): it costs about
20 minutes under emulation. The outcome of every mutation is in the report.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.system import test_10_service as service
from tests.system import test_20_call as call
from tests.system import test_30_faults as faults
from tests.system import test_40_power as power
from tests.system.appliance import UNIT, Appliance
from tests.system.conftest import Report
from tests.system.guest import GuestError

pytestmark = pytest.mark.skipif(os.environ.get("ATOMS_SYSTEM_MUTATIONS") != "1",
                                reason="mutation runs are opt-in: ATOMS_SYSTEM_MUTATIONS=1 (about 20 minutes)")
DROPIN = f"/etc/systemd/system/{UNIT}.service.d/zz-mutation.conf"
Scenario = Callable[[Appliance, Report], None]


@dataclass(frozen=True)
class Mutation:
    """One deliberate break: `old` -> `new` in an installed module, or a unit drop-in."""

    family: str
    scenario: Scenario
    module: str | None = None      # path below site-packages, e.g. "device/cli.py"
    old: str = ""
    new: str = ""
    dropin: str | None = None
    count: int = 1                 # occurrences of `old` (all are replaced)
    restart: bool = True
    shell: str | None = None       # instead of a code or unit change
    undo: str | None = None

    def __str__(self) -> str:
        return self.family


MUTATIONS = [
    Mutation("start-ready", service.test_start_to_ready, "device/service/supervisor.py",
             "        self.notifier.ready()\n", "        pass  # mutation: no READY=1\n", restart=False),
    Mutation("security", service.test_security_score,
             dropin="[Service]\nProtectSystem=no\nProtectHome=no\nNoNewPrivileges=no\nPrivateTmp=no\n"
                    "CapabilityBoundingSet=~\nSystemCallFilter=\nRestrictAddressFamilies=\n"),
    # An empty CPUAffinity= resets the installer's drop-in: the process runs unpinned.
    Mutation("unit-pinning", service.test_the_unit_pins_and_sandboxes_the_service, dropin="[Service]\nCPUAffinity=\n"),
    Mutation("ctl-access", lambda app, _r: service.test_ctl_status_by_anyone_else(app), "device/cli.py",
             "except PermissionError as exc:", "except ZeroDivisionError as exc:", count=2, restart=False),
    Mutation("doctor", lambda app, _r: service.test_doctor_as_a_person_runs_it(app, "sudo"),
             "device/doctor/runner.py", "snapshots = service.service_snapshots(settings.control_socket, "
             "env.service_status, env.sleep)", "snapshots = None", restart=False),
    Mutation("button", lambda app, _r: call.test_button_starts_a_call(app), "hw/gpio.py",
             "button.when_pressed = self._emitter(ButtonPressed(name))", "button.when_pressed = None"),
    Mutation("speech", call.test_speech_round_trip, "device/audio/capture.py",
             "uplink.put(UplinkChunk(chunk, read_at, generation=fmt.generation))",
             "uplink.put(UplinkChunk(bytes(len(chunk)), read_at, generation=fmt.generation))"),
    Mutation("leds", lambda app, _r: call.test_leds_follow_the_call(app), "hw/gpio.py",
             "led.blink(on_time=BLINK[0], off_time=BLINK[1])", "led.on()"),
    Mutation("mute", lambda app, _r: call.test_mute_button_sends_no_audio(app), "device/core/outputs.py",
             "        and not state.muted\n", "        and True  # mutation: mute ignored\n"),
    Mutation("stop", lambda app, _r: faults.test_stop_closes_the_session_and_exits_0(app),
             "device/session/client.py", "self._send(live.socket, SESSION_CLOSE_TEXT)",
             "pass  # mutation: hang up without session.close"),
    Mutation("kill-9", lambda app, _r: faults.test_kill_9_is_restarted(app), dropin="[Service]\nRestart=no\n"),
    Mutation("watchdog", faults.test_frozen_process_is_killed_by_the_watchdog, dropin="[Service]\nWatchdogSec=0\n"),
    Mutation("sound-card", lambda app, _r: faults.test_sound_card_removed_mid_call_recovers_without_restart(app),
             # In the one function both audio threads reopen with: after a loss, never again (a
             # thread that merely ended would be restarted by the audio watch, and recover).
             "device/audio/reopen.py", "            device = open_device()\n",
             "            if lost:  # mutation: a lost device is never reopened\n"
             "                raise DeviceUnavailable(what, 'mutation: never reopened')\n"
             "            device = open_device()\n"),
    Mutation("network", lambda app, _r: faults.test_network_cut_and_restored_reconnects(app),
             "device/session/connection.py", "delay = self.backoff.next_delay(ending.retry_after)",
             "delay = 3600.0  # mutation: a lost connection is retried only an hour later"),
    Mutation("power-cut", power.test_power_cut_right_after_mute_keeps_it_muted, "device/service/persist.py",
             "write_json_atomic(self.path, dict(self._known), durable=True)", "pass  # mutation: state not saved"),
    Mutation("reboot", power.test_reboot_comes_back_by_itself, shell=f"systemctl disable {UNIT}",
             undo=f"systemctl enable {UNIT}", restart=False),
]


def _site_packages(app: Appliance) -> str:
    return app.guest.sh("/opt/atoms-appliance/venv/bin/python -c 'import device, os; "
                        "print(os.path.dirname(os.path.dirname(device.__file__)))'")


# Run by the guest's python3 with the request on stdin: replaces every occurrence (there must be
# `count` of them) and keeps the original beside the file. Both are synced: the power-cut scenario
# kills the guest without a shutdown, and an edit still in the page cache came back as an empty
# module (an ImportError at every start, for that scenario and the ones after it).
EDIT = """
s = open(d["path"]).read()
n = s.count(d["old"])
assert n == d["count"], f"{n} matches of {d['old']!r}, not {d['count']}"
open(d["path"] + ".orig", "w").write(s)
open(d["path"], "w").write(s.replace(d["old"], d["new"]))
os.sync()
"""


def _apply(app: Appliance, m: Mutation) -> str | None:
    path = None
    if m.module is not None:
        path = f"{_site_packages(app)}/{m.module}"
        request = {"path": path, "old": m.old, "new": m.new, "count": m.count, "code": EDIT}
        app.guest.run("python3 -c 'import json, os, sys; d = json.load(sys.stdin); exec(d[\"code\"])'",
                      input=json.dumps(request).encode())
    if m.dropin is not None:
        app.guest.put(m.dropin.encode(), DROPIN)
        app.guest.run("sync && systemctl daemon-reload")
    if m.shell is not None:
        app.guest.run(m.shell)
    if m.restart:
        app.guest.run(f"systemctl restart {UNIT}", timeout=120)
    return path


def _undo(app: Appliance, m: Mutation, path: str | None) -> None:
    if path is not None:
        app.guest.run(f"mv -f {path}.orig {path} && sync")
    if m.dropin is not None:
        app.guest.run(f"rm -f {DROPIN} && systemctl daemon-reload")
    if m.undo is not None:
        app.guest.run(m.undo)
    # Whatever the broken product left behind: a frozen process, a link down, an unbound card.
    app.guest.run(f"systemctl kill -s CONT {UNIT}; ip link set atoms0 up; "
                  "[ -e /sys/bus/platform/drivers/snd_aloop/snd_aloop.0 ] || "
                  "echo snd_aloop.0 > /sys/bus/platform/drivers/snd_aloop/bind; "
                  f"systemctl reset-failed {UNIT}; systemctl restart {UNIT}", check=False, timeout=150)
    app.idle()


@pytest.mark.parametrize("mutation", MUTATIONS, ids=str)
def test_mutation_makes_its_scenario_fail(appliance: Appliance, report: Report, mutation: Mutation) -> None:
    appliance.guest.run("ip link set atoms0 up")
    appliance.idle()
    path = _apply(appliance, mutation)
    start = time.monotonic()
    outcome = "the scenario passed: the mutation went unnoticed"
    try:
        with pytest.raises((AssertionError, GuestError)) as failure:
            mutation.scenario(appliance, Report())   # a scratch report: keep the real measurements
        first = next((line.strip() for line in str(failure.value).splitlines() if line.strip()), "")
        outcome = f"failed as it should: {first[:200]}"
    finally:
        report.add(appliance.guest.image.release.name, f"mutation_{mutation.family}",
                   f"{outcome} ({time.monotonic() - start:.0f} s)")
        _undo(appliance, mutation, path)
