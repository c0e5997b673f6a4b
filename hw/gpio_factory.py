"""The real pin factory for `GpioControls`: which GPIO chip, which board, and lgpio's work directory.

gpiozero's lgpio factory (the one that works on kernel 6.6+ and the Pi 5) identifies the board from
the Raspberry Pi revision in /proc/device-tree or /proc/cpuinfo and refuses to start without one
(`PinUnknownPi`), although lgpio itself only talks to a Linux /dev/gpiochipN. `board` chooses:

| board     | a recognised Raspberry Pi         | any other board (or a VM with gpio-sim)            |
| --------- | --------------------------------- | --------------------------------------------------- |
| "auto"    | gpiozero's own choice             | the generic layout below, with a warning            |
| "pi"      | gpiozero's own choice             | refused (DeviceUnavailable), as gpiozero does       |
| "generic" | the generic layout                | the generic layout                                  |

`GPIOZERO_PIN_FACTORY` (gpiozero's own switch) still wins when neither is set.

The generic layout is the 40-pin header of a Raspberry Pi 3 B (revision a02082): "GPIO N" (the
BCM numbers of the pin settings) is line N of the chip. `chip` picks /dev/gpiochipN (None:
gpiozero's choice on a Pi, which is 4 on a Pi 5 with an older kernel and 0 elsewhere; 0 on other
boards).

lgpio's C library reads `LG_WD` when it is loaded, changes the process's working directory to
it and creates its notification FIFOs there (`.lgd-nfyN`); the service's unit sets
`LG_WD=/run/atoms-appliance`. Run anywhere else (`doctor` from a read-only directory, or with a
shared /tmp holding another user's FIFO) the import fails with `xCreatePipe: Can't set
permissions` and then `FileNotFoundError: '.lgd-nfy-3'`. `import_lgpio` gives a process without
`LG_WD` a private directory of its own and puts the working directory back afterwards.

Threads: everything here runs on the thread that builds the controls (the main thread).
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
from types import ModuleType
from typing import Final

from gpiozero.pins import Factory

from hw.errors import DeviceUnavailable
from hw.settings import GPIO_BOARDS, GpioBoard

log = logging.getLogger(__name__)

# A Raspberry Pi 3 Model B: the 40-pin header whose BCM GPIO N is line N of gpiochip0.
GENERIC_REVISION: Final = 0xA02082


def import_lgpio() -> ModuleType:
    """Import lgpio with a usable work directory (see the module docstring); raises ImportError."""
    if not os.environ.get("LG_WD"):
        workdir = tempfile.mkdtemp(prefix="atoms-appliance-lgpio-")
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        os.environ["LG_WD"] = workdir
    cwd = os.getcwd()
    try:
        import lgpio
    finally:
        try:
            os.chdir(cwd)   # the library moved us into LG_WD; relative paths must keep working
        except OSError:
            pass
    return lgpio


def is_raspberry_pi() -> bool:
    """Whether gpiozero recognises this board (a Pi revision in the device tree or cpuinfo)."""
    from gpiozero.exc import PinUnknownPi
    from gpiozero.pins.local import get_pi_revision

    try:
        get_pi_revision()
    except (PinUnknownPi, OSError, ValueError):
        return False
    return True


def real_pin_factory(chip: int | None = None, board: GpioBoard = "auto") -> Factory | None:
    """The lgpio pin factory for `chip` and `board`, or None for gpiozero's own default choice.

    Raises DeviceUnavailable when lgpio is missing, the board is refused or the chip cannot be
    opened (missing, or not readable by this user).
    """
    if board not in GPIO_BOARDS:
        raise ValueError(f"board must be one of {GPIO_BOARDS}, not {board!r}")
    if chip is None and board == "auto" and os.environ.get("GPIOZERO_PIN_FACTORY"):
        return None   # the person chose gpiozero's factory by its own switch
    pi = board != "generic" and is_raspberry_pi()
    if pi and chip is None:
        return None
    if board == "pi" and not pi:
        raise DeviceUnavailable("gpio", "this board is not a Raspberry Pi that gpiozero recognises "
                                "(no Pi revision in /proc/device-tree or /proc/cpuinfo); set gpio_board = "
                                "\"generic\" to use its GPIO chip lines as BCM numbers")
    try:
        lgpio = import_lgpio()
        from gpiozero.pins.lgpio import LGPIOFactory
    except ImportError as exc:
        raise DeviceUnavailable("gpio", f"lgpio is not installed ({exc}); reinstall with "
                                "deploy/install.sh --lgpio yes") from exc
    number = 0 if chip is None else chip
    factory_class = LGPIOFactory if pi else _generic_factory_class()
    if not pi and board == "auto":
        log.warning("this board is not a Raspberry Pi that gpiozero recognises: using gpiochip%s with "
                    "line N as GPIO N (gpio_board = \"generic\" says so and silences this)", number)
    try:
        factory: Factory = factory_class(chip=number)
    except (lgpio.error, OSError) as exc:
        raise DeviceUnavailable(f"/dev/gpiochip{number}", f"{type(exc).__name__}: {exc}") from exc
    return factory


@functools.cache
def _generic_factory_class() -> type[Factory]:
    """gpiozero's lgpio factory with the generic layout (made on first use: lgpio may be missing
    on a laptop, where this module must still import)."""
    from gpiozero.pins.lgpio import LGPIOFactory

    class GenericLgpioFactory(LGPIOFactory):
        """gpiozero's lgpio factory on a board it does not know: the generic 40-pin layout."""

        def _get_revision(self) -> int:
            return GENERIC_REVISION

    return GenericLgpioFactory
