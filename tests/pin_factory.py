"""gpiozero's one process-global, `Device.pin_factory`, kept from leaking between tests.

gpiozero sets it the first time a device is made without `pin_factory=` (the "gpiozero" controls
backend does; on a Pi that claims real pins through lgpio), and consults `GPIOZERO_PIN_FACTORY`
only while it is unset. `tests/conftest.py` wraps every test in `preserved_pin_factory()`, so no
test sees a factory another one left: none skips or fails depending on the order of the run.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gpiozero import Device


@contextmanager
def preserved_pin_factory() -> Iterator[None]:
    """Save `Device.pin_factory`; afterwards close any other factory left there (releasing its
    pins) and put the saved one back."""
    saved = Device.pin_factory
    try:
        yield
    finally:
        left = Device.pin_factory
        if left is not saved:
            Device.pin_factory = saved
            if left is not None:
                left.close()
