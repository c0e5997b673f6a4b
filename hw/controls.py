"""Buttons and LEDs: the interface the service talks to, whatever the hardware.

Implementations: `hw.gpio` (gpiozero on real pins, or on gpiozero's own `MockFactory`),
`hw.keyboard` (terminal keys as buttons, LEDs drawn as a status line) and `NoControls` below (a
headless always-on unit). `hw.registry.controls_backend` picks one by name.

Button events are the `device.core.events` values themselves (`ButtonPressed`, `ButtonReleased`,
`ButtonHeld`). They are plain frozen dataclasses with no behaviour, so `hw` importing them keeps
the layering honest (nothing in `device.core.events` imports `hw`, gpiozero or any driver) and saves a
second, parallel enum plus a conversion step that could drift. The same goes for `LedState`.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Self

from device.core.events import ButtonHeld, ButtonPressed, ButtonReleased, LedState

log = logging.getLogger(__name__)

ButtonEvent = ButtonPressed | ButtonReleased | ButtonHeld
EventSink = Callable[[ButtonEvent], None]


class Controls(ABC):
    """The buttons and LEDs of the device.

    An implementation must provide:
    - `start(on_event)`: from then on, every button change is reported by calling `on_event` with
      one `ButtonEvent`. It is called on the driver's own thread (gpiozero/lgpio callback thread,
      gpiozero's hold thread, or the keyboard reader thread), so `on_event` must only enqueue
      (never block, never touch state owned by the main thread). Events before `start` are
      dropped. An exception raised by `on_event` is logged and swallowed: a handler bug must not
      kill the driver's thread.
    - `show(leds)`: main thread only. Apply the outputs; idempotent, so only what changed since
      the previous call is touched (a blink keeps its phase when the same state is shown again).
      Blinking and pulsing run in the background by themselves until the next change.
    - `close()`: main thread; idempotent and safe after a half-finished `__init__`. LEDs off,
      callbacks detached, pins or terminal released. No `on_event` call starts after it returns.

    `leds` is the last `LedState` shown (None before the first `show`), for status reports and
    tests. Durations are in seconds.
    """

    leds: LedState | None = None

    @abstractmethod
    def start(self, on_event: EventSink) -> None: ...

    @abstractmethod
    def show(self, leds: LedState) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def deliver(on_event: EventSink | None, event: ButtonEvent) -> None:
    """Hand one event to the sink from a driver thread, keeping handler errors off that thread.

    A failing handler is the application's bug, not a hardware fault: log it with the traceback
    and keep the button working (pyserial's ReaderThread draws the same line).
    """
    if on_event is None:
        return
    try:
        on_event(event)
    except Exception:
        log.exception("button event handler failed for %s", event)


class NoControls(Controls):
    """No buttons, no LEDs: a headless always-on unit (`controls = "none"`).

    `show` only records the state (`leds`, and every change in `history`), so status reports and
    tests still see what the device would show. No threads; any thread may call it.
    """

    def __init__(self) -> None:
        self.history: list[LedState] = []
        self._on_event: EventSink | None = None

    def start(self, on_event: EventSink) -> None:
        self._on_event = on_event

    def show(self, leds: LedState) -> None:
        if leds != self.leds:
            self.leds = leds
            self.history.append(leds)

    def close(self) -> None:
        self._on_event = None
