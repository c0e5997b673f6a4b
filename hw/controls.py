"""Buttons and LEDs: the interface the service talks to, whatever the hardware.

Implementations: `hw.gpio` (gpiozero on real pins, or on gpiozero's own `MockFactory`),
`hw.keyboard` (terminal keys as buttons, LEDs drawn as a status line) and `NoControls` below (a
headless always-on unit). `hw.registry.controls_from_settings` picks one by name from settings.

This module owns the vocabulary of buttons and LEDs (`ButtonName`, the button events
`ButtonPressed`/`ButtonReleased`/`ButtonHeld`, `LedState` and its patterns), as gpiozero's `pins`
owns its own words: `hw` depends on nothing above it, and the application (`device.core.events`,
the state machine) imports these values from here. They are plain frozen values with no behaviour.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

log = logging.getLogger(__name__)


# -- the vocabulary of buttons and LEDs (owned here; the application imports it from here) --
class ButtonName(StrEnum):
    CALL = "call"   # call / talk button
    MUTE = "mute"
    # Volume: optional buttons, and a rotary encoder reports each detent as a press of one.
    VOLUME_UP = "volume_up"
    VOLUME_DOWN = "volume_down"


class StatusPattern(StrEnum):
    """What the status LED does."""

    OFF = "off"
    BLINK = "blink"            # connecting / reconnecting / offline
    ON = "on"                  # in a call, listening
    FAST_BLINK = "fast_blink"  # hardware or other error
    AUTH_ERROR = "auth_error"  # double blink: the key or agent was rejected
    WAKE_LISTENING = "wake_listening"  # a short flash every few seconds: waiting for the wake word


class Indicator(StrEnum):
    """The one condition a single-LED device shows, by priority (highest first)."""

    MUTED = "muted"
    ERROR = "error"
    CONNECTING = "connecting"
    AGENT_SPEAKING = "agent_speaking"
    LISTENING = "listening"
    WAKE_LISTENING = "wake_listening"  # idle, but the local wake word detector is listening
    IDLE = "idle"


@dataclass(frozen=True)
class LedState:
    """The outputs a person sees. The mute LED is on exactly when the mic gate is closed by mute."""

    status: StatusPattern = StatusPattern.OFF
    mute: bool = False
    speaking: bool = False
    indicator: Indicator = Indicator.IDLE


@dataclass(frozen=True)
class ButtonPressed:
    button: ButtonName


@dataclass(frozen=True)
class ButtonReleased:
    button: ButtonName


@dataclass(frozen=True)
class ButtonHeld:
    """The button has been held for the long-press time (ends the call, except in push-to-talk)."""

    button: ButtonName

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
    """No buttons, no LEDs: a headless always-on unit (`gpio_backend = "none"`).

    `show` only records the state (`leds`, and every change in `history`), so status reports and
    tests still see what the device would show. No threads; any thread may call it.
    """

    def __init__(self) -> None:
        self.history: list[LedState] = []
        self._on_event: EventSink | None = None

    @classmethod
    def from_settings(cls, settings: object) -> NoControls:
        """`hw.registry`'s builder: nothing to read, there is no hardware."""
        return cls()

    def start(self, on_event: EventSink) -> None:
        self._on_event = on_event

    def show(self, leds: LedState) -> None:
        if leds != self.leds:
            self.leds = leds
            self.history.append(leds)

    def close(self) -> None:
        self._on_event = None
