"""Power: a power cut right after a mute press keeps the mute; a reboot brings the service back by
itself. These reboot the guest, so they run last."""
from __future__ import annotations

import time

from tests.system.appliance import MUTE_PIN, UNIT, Appliance
from tests.system.conftest import Report

# From the kernel's start to READY=1 after a boot, under emulation (the guest boots to ssh in
# ~50-90 s under TCG on these machines).
BOOT_READY_BOUND_S = 240.0


def _ready_after_boot(app: Appliance, report: Report, key: str) -> float:
    app.wait_ready(BOOT_READY_BOUND_S)
    since_boot = int(app.show("ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"]) / 1e6
    report.add(app.guest.image.release.name, key, round(since_boot, 1))
    return since_boot


def test_power_cut_right_after_mute_keeps_it_muted(appliance: Appliance, report: Report) -> None:
    """Mute with the button, cut the power (QEMU killed, no shutdown) half a second after the
    service shows it: after the next boot the service starts muted, red LED on."""
    appliance.idle()
    appliance.press(MUTE_PIN)
    appliance.wait_status(lambda s: s["muted"], 10, "muted by the button")
    time.sleep(0.5)
    appliance.guest.power_cut()
    appliance.guest.boot()
    since_boot = _ready_after_boot(appliance, report, "power_cut_boot_to_ready_s")
    status = appliance.status()
    assert status["muted"], status
    assert appliance.led_patterns(1)["mute"] == "on"
    assert since_boot <= BOOT_READY_BOUND_S
    appliance.ctl("unmute")


def test_reboot_comes_back_by_itself(appliance: Appliance, report: Report) -> None:
    """`systemctl reboot`: the service is enabled, starts at boot and reaches READY by itself."""
    appliance.idle()
    appliance.guest.reboot()
    since_boot = _ready_after_boot(appliance, report, "boot_to_ready_s")
    assert since_boot <= BOOT_READY_BOUND_S
    assert appliance.show("UnitFileState")["UnitFileState"] == "enabled"
    assert appliance.guest.sh(f"systemctl is-active {UNIT}") == "active"
    appliance.idle()
