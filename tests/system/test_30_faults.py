"""Faults on the real stack: stop, kill -9, a frozen process and the watchdog, the sound card gone
mid-call, the network cut in the guest."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.system.appliance import UNIT, Appliance
from tests.system.conftest import Report

WATCHDOG_SEC = 30   # systemd/atoms-appliance.service
CARD_DRIVER = "/sys/bus/platform/drivers/snd_aloop"
CARD_DEVICE = "snd_aloop.0"


@pytest.fixture
def idle(appliance: Appliance) -> Iterator[Appliance]:
    appliance.guest.run("ip link set atoms0 up")
    appliance.idle()
    yield appliance
    appliance.guest.run(f"ip link set atoms0 up; [ -e {CARD_DRIVER}/{CARD_DEVICE} ] || "
                        f"echo {CARD_DEVICE} > {CARD_DRIVER}/bind", check=False)


def test_stop_closes_the_session_and_exits_0(idle: Appliance) -> None:
    """`systemctl stop` in a call: the agent gets session.close, the process exits with 0."""
    mark = idle.sim_mark()
    idle.ctl("call")
    idle.wait_status(lambda s: s["call_state"] == "in_call", 30, "in a call")
    idle.guest.run(f"systemctl stop {UNIT}", timeout=60)
    try:
        idle.wait_sim("close_requested", mark, 10)
        props = idle.show("ExecMainStatus", "Result", "ActiveState")
        assert props == {"ExecMainStatus": "0", "Result": "success", "ActiveState": "inactive"}, props
    finally:
        idle.guest.run(f"systemctl start {UNIT}", timeout=120)


def _wait_new_pid(app: Appliance, old: int, timeout: float) -> tuple[int, float]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pid = app.main_pid()
        if pid not in (0, old):
            app.wait_ready(max(1.0, timeout - (time.monotonic() - start)))
            return pid, time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"still pid {old} after {timeout:.0f} s: {app.show('ActiveState', 'SubState', 'NRestarts')}")


def test_kill_9_is_restarted(idle: Appliance) -> None:
    """SIGKILL: systemd restarts the service (Restart=on-failure) and it is ready again."""
    pid = idle.main_pid()
    restarts = int(idle.show("NRestarts")["NRestarts"])
    idle.guest.run(f"kill -9 {pid}")
    _new, _ = _wait_new_pid(idle, pid, 90)
    assert int(idle.show("NRestarts")["NRestarts"]) == restarts + 1
    idle.idle()


def test_frozen_process_is_killed_by_the_watchdog(idle: Appliance, report: Report) -> None:
    """SIGSTOP: no more WATCHDOG=1, so systemd kills it after WatchdogSec and restarts it."""
    pid = idle.main_pid()
    cursor = idle.cursor()
    idle.guest.run(f"kill -STOP {pid}")
    start = time.monotonic()
    _new, _ = _wait_new_pid(idle, pid, WATCHDOG_SEC + 90)
    took = time.monotonic() - start
    log = idle.guest.sh(f"journalctl --after-cursor='{cursor}' --no-pager -o cat -u {UNIT}")
    report.add(idle.guest.image.release.name, "watchdog_restart_s", round(took, 1))
    assert "Watchdog timeout" in log, log[-2000:]
    # Killed within WatchdogSec of the last ping (sent every WatchdogSec/2), restarted RestartSec later.
    killed = [line for line in log.splitlines() if "Watchdog timeout" in line]
    assert killed
    idle.idle()


def test_sound_card_removed_mid_call_recovers_without_restart(idle: Appliance) -> None:
    """The loopback card unbound from its driver mid-call (as a USB card unplugged) and bound
    again: the status LED shows the fault, then audio flows again in the same process and call."""
    pid = idle.main_pid()
    idle.ctl("call")
    start = idle.wait_status(lambda s: s["call_state"] == "in_call", 30, "in a call")["counters"]
    opened = start["capture_reopens"] + start["playback_reopens"]   # the first opens count too
    idle.guest.run(f"echo {CARD_DEVICE} > {CARD_DRIVER}/unbind")
    lost = idle.wait_status(lambda s: bool(s["hardware_faults"]), 20, "the lost card reported")
    error = idle.led_patterns(2)
    assert error["status"] == "fast_blink", error   # the hardware-error pattern
    idle.guest.run(f"echo {CARD_DEVICE} > {CARD_DRIVER}/bind")
    back = idle.wait_status(lambda s: not s["hardware_faults"], 60, "the card back in use")
    before = back["counters"]["frames_captured"]
    after = idle.wait_status(lambda s: s["counters"]["frames_captured"] > before + 50, 20, "audio flowing again")
    assert idle.main_pid() == pid, "the service was restarted instead of recovering"
    assert after["call_state"] == "in_call", after
    assert after["counters"]["capture_reopens"] + after["counters"]["playback_reopens"] > opened, (lost, after)
    idle.ctl("hangup")


def test_network_cut_and_restored_reconnects(idle: Appliance) -> None:
    """The guest's link to the agent goes down mid-call (no FIN, no RST: pings go unanswered) and
    comes back: the service notices, reconnects by itself and is in a call again."""
    pid = idle.main_pid()
    mark = idle.sim_mark()
    idle.ctl("call")
    idle.wait_sim("created", mark, 30)
    idle.wait_status(lambda s: s["call_state"] == "in_call", 20, "in a call")
    idle.guest.run("ip link set atoms0 down")
    idle.wait_status(lambda s: s["call_state"] == "reconnecting", 30, "the lost link noticed")
    idle.guest.run("ip link set atoms0 up")
    idle.wait_sim("created", mark, 60, count=2)
    status = idle.wait_status(lambda s: s["call_state"] == "in_call", 30, "in a call again")
    assert status["counters"]["reconnects"] >= 1, status
    assert idle.main_pid() == pid
    idle.ctl("hangup")
