"""Buttons and LEDs on GPIO pins through gpiozero (backends "gpiozero" and "mock").

On a Pi, gpiozero picks its pin factory itself: lgpio when installed (works on kernel 6.6+ and the
Pi 5), or whatever `GPIOZERO_PIN_FACTORY` names. The "mock" backend runs the very same code on a
private `gpiozero.pins.mock.MockFactory` handed to every device as `pin_factory=`; the global
`Device.pin_factory` is never touched, so tests and demos cannot leak pins into each other.

Wiring (BCM numbers, defaults): buttons between the pin and ground (internal pull-up, pressed =
low); LEDs from the pin through a resistor to ground (active high; `active_high_leds=False` for
LEDs wired to 3V3).

What a person sees (`LedState` -> pins):

| LedState field      | value        | LED                     | pattern                                  |
| ------------------- | ------------ | ----------------------- | ---------------------------------------- |
| status              | OFF          | status (GPIO22)         | dark: idle, no call                      |
| status              | BLINK        | status                  | 0.5 s on / 0.5 s off: connecting, reconnecting, offline |
| status              | ON           | status                  | solid: in a call, listening              |
| status              | FAST_BLINK   | status                  | 0.1 s on / 0.1 s off: hardware or other error |
| status              | AUTH_ERROR   | status                  | double blink, 1.2 s cycle (0.15 on, 0.15 off, 0.15 on, 0.75 off): API key or agent rejected |
| status              | WAKE_LISTENING | status                | 0.1 s flash every 3 s: no call, listening for the wake word |
| mute                | True / False | mute, red (GPIO23)      | solid while the mic gate is closed by mute: no audio leaves |
| speaking            | True / False | speaking (GPIO24)       | breathing pulse (0.6 s up, 0.6 s down) while the agent talks; solid without PWM |

`LedState.indicator` (the one condition a single-LED device would show) is not used here: this
board has a separate LED for each field.

Volume (all optional, off by default): two buttons (`volume_up_pin`, `volume_down_pin`, wired
like the others) and/or a rotary encoder (`encoder_a_pin`, `encoder_b_pin`: its A and B contacts
to those pins, C to ground; gpiozero's `RotaryEncoder`), each detent clockwise reported as a press
of VOLUME_UP, counter-clockwise as VOLUME_DOWN.

Threads: gpiozero calls the button callbacks on its own threads (the pin factory's edge thread,
and each Button's hold thread for `when_held`); they only call `on_event`. Blinking and pulsing
run on gpiozero's own background threads, stopped and joined by the next `show` or by `close`.
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, Self, TypeVar

from gpiozero import LED, PWMLED, Button, Device, RotaryEncoder
from gpiozero.exc import GPIOZeroError, PinPWMUnsupported
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from hw.controls import (
    ButtonEvent,
    ButtonHeld,
    ButtonName,
    ButtonPressed,
    ButtonReleased,
    Controls,
    EventSink,
    LedState,
    StatusPattern,
    deliver,
)
from hw.errors import DeviceUnavailable
from hw.gpio_factory import import_lgpio, real_pin_factory
from hw.settings import GpioBoard, GpioSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

BLINK: Final = (0.5, 0.5)          # on, off seconds: connecting
FAST_BLINK: Final = (0.1, 0.1)     # on, off seconds: error
WAKE_FLASH: Final = (0.1, 2.9)     # on, off seconds: listening for the wake word
# gpiozero's blink() has one on/off pair, so the double blink is a `source` stepping through this
# sequence every AUTH_ERROR_STEP seconds (a public gpiozero API, on its own background thread).
AUTH_ERROR_STEP: Final = 0.15
AUTH_ERROR_STEPS: Final = (1, 0, 1, 0, 0, 0, 0, 0)
PULSE: Final = (0.6, 0.6)          # fade in, fade out seconds: agent speaking


def _driver_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [GPIOZeroError, OSError, RuntimeError]
    try:  # lgpio raises its own `lgpio.error` (e.g. "GPIO busy") straight through gpiozero
        errors.append(import_lgpio().error)
    except ImportError:
        pass
    return tuple(errors)


_DRIVER_ERRORS: Final = _driver_errors()


def _claim(what: str, pin: int, make: Callable[[], T]) -> T:
    """Create one gpiozero device, turning any driver error into `DeviceUnavailable` with context."""
    try:
        return make()
    except _DRIVER_ERRORS as exc:
        raise DeviceUnavailable(f"{what} on GPIO{pin}", f"{type(exc).__name__}: {exc}") from exc


class GpioControls(Controls):
    """Buttons and LEDs on GPIO pins (see the module docstring for wiring and patterns).

    Threads: construct, `start`, `show` and `close` on the main thread; button callbacks arrive on
    gpiozero's threads and only call `on_event`. Any pin may be None to leave that part out.
    Pins are claimed in `__init__` (a busy or missing pin raises `DeviceUnavailable` at once);
    events are delivered from `start` on. `pins` maps each part to its BCM number; `factory` is
    the gpiozero pin factory in use. Without `pin_factory`, `chip` and `board` choose the real one
    (hw/gpio_factory.py: which /dev/gpiochipN, and what to do on a board gpiozero does not know);
    a factory made here is closed by `close`.
    """

    def __init__(
        self,
        call_pin: int | None = 17,
        mute_pin: int | None = 27,
        status_led_pin: int | None = 22,
        mute_led_pin: int | None = 23,
        speaking_led_pin: int | None = 24,
        speaking_led_pwm: bool = True,
        bounce_ms: int = 30,
        hold_seconds: float = 2.0,
        active_high_leds: bool = True,
        pin_factory: Factory | None = None,
        volume_up_pin: int | None = None,
        volume_down_pin: int | None = None,
        encoder_a_pin: int | None = None,
        encoder_b_pin: int | None = None,
        chip: int | None = None,
        board: GpioBoard = "auto",
    ) -> None:
        # Everything close() touches exists before the first pin is claimed (safe half-way).
        self._on_event: EventSink | None = None
        self._buttons: list[Button] = []
        self._encoder: RotaryEncoder | None = None
        self._status: LED | None = None
        self._mute: LED | None = None
        self._speaking: LED | PWMLED | None = None
        self._closed = False
        self.leds = None
        self.pins: dict[str, int] = {}
        self.factory: Factory | None = pin_factory
        self._bounce = bounce_ms / 1000 if bounce_ms > 0 else None
        self._hold_seconds = hold_seconds
        self._own_factory: Factory | None = None
        try:
            if self.factory is None and any(p is not None for p in (
                    call_pin, mute_pin, status_led_pin, mute_led_pin, speaking_led_pin,
                    volume_up_pin, volume_down_pin, encoder_a_pin, encoder_b_pin)):
                self.factory = self._own_factory = real_pin_factory(chip, board)
            buttons = ((ButtonName.CALL, call_pin), (ButtonName.MUTE, mute_pin),
                       (ButtonName.VOLUME_UP, volume_up_pin), (ButtonName.VOLUME_DOWN, volume_down_pin))
            for name, pin in buttons:
                if pin is not None:
                    self._buttons.append(self._button(name, pin))
            if encoder_a_pin is not None and encoder_b_pin is not None:
                self._encoder = self._rotary(encoder_a_pin, encoder_b_pin)
            if status_led_pin is not None:
                self._status = self._led("status_led", status_led_pin, active_high_leds)
            if mute_led_pin is not None:
                self._mute = self._led("mute_led", mute_led_pin, active_high_leds)
            if speaking_led_pin is not None:
                self._speaking = self._speaking_led(speaking_led_pin, speaking_led_pwm, active_high_leds)
        except BaseException:
            self.close()
            raise
        if self.factory is None:
            self.factory = Device.pin_factory  # the one gpiozero chose (None if every pin is None)
        log.info("GPIO controls on %s: %s", type(self.factory).__name__, self.pins)

    @classmethod
    def from_settings(cls, settings: GpioSettings) -> Self:
        """The pins, debounce and long-press time the settings give (`hw.registry`); claims the pins."""
        return cls(call_pin=settings.call_pin, mute_pin=settings.mute_pin,
                   status_led_pin=settings.status_led_pin, mute_led_pin=settings.mute_led_pin,
                   speaking_led_pin=settings.speaking_led_pin, bounce_ms=settings.button_bounce_ms,
                   hold_seconds=settings.long_press_seconds, volume_up_pin=settings.volume_up_pin,
                   volume_down_pin=settings.volume_down_pin, encoder_a_pin=settings.volume_encoder_a_pin,
                   encoder_b_pin=settings.volume_encoder_b_pin,
                   chip=settings.gpio_chip, board=settings.gpio_board)

    # -- construction ----------------------------------------------------------------------------
    def _button(self, name: ButtonName, pin: int) -> Button:
        button = _claim(f"{name} button", pin, lambda: Button(
            pin, pull_up=True, bounce_time=self._bounce, hold_time=self._hold_seconds,
            pin_factory=self.factory,
        ))
        self.pins[str(name)] = pin
        button.when_pressed = self._emitter(ButtonPressed(name))
        button.when_released = self._emitter(ButtonReleased(name))
        button.when_held = self._emitter(ButtonHeld(name))
        return button

    def _rotary(self, a: int, b: int) -> RotaryEncoder:
        encoder = _claim("volume encoder", a, lambda: RotaryEncoder(
            a, b, bounce_time=self._bounce, pin_factory=self.factory))
        self.pins["encoder_a"], self.pins["encoder_b"] = a, b
        encoder.when_rotated_clockwise = self._emitter(ButtonPressed(ButtonName.VOLUME_UP))
        encoder.when_rotated_counter_clockwise = self._emitter(ButtonPressed(ButtonName.VOLUME_DOWN))
        return encoder

    def _led(self, part: str, pin: int, active_high: bool) -> LED:
        led = _claim(part.replace("_", " "), pin, lambda: LED(
            pin, active_high=active_high, initial_value=False, pin_factory=self.factory,
        ))
        self.pins[part] = pin
        return led

    def _speaking_led(self, pin: int, pwm: bool, active_high: bool) -> LED | PWMLED:
        if pwm:
            try:
                led = PWMLED(pin, active_high=active_high, initial_value=0, pin_factory=self.factory)
            except PinPWMUnsupported:
                # PWMLED closes itself (releasing the pin) when PWM fails, so a plain LED can
                # take the same pin: the speaking LED is then solid instead of breathing.
                log.warning("GPIO%s has no PWM: the speaking LED will be solid, not pulsing", pin)
            except _DRIVER_ERRORS as exc:
                raise DeviceUnavailable(f"speaking LED on GPIO{pin}", f"{type(exc).__name__}: {exc}") from exc
            else:
                self.pins["speaking_led"] = pin
                return led
        return self._led("speaking_led", pin, active_high)

    def _emitter(self, event: ButtonEvent) -> Callable[[], None]:
        def fire() -> None:  # gpiozero's thread: hand over and return
            deliver(self._on_event, event)
        return fire

    # -- Controls --------------------------------------------------------------------------------
    @property
    def speaking_pulses(self) -> bool:
        """Whether the speaking LED breathes (PWM) rather than lighting solid."""
        return isinstance(self._speaking, PWMLED)

    def start(self, on_event: EventSink) -> None:
        if self._closed:
            raise RuntimeError("GpioControls is closed")
        self._on_event = on_event

    def show(self, leds: LedState) -> None:
        if self._closed:
            return
        old = self.leds
        self.leds = leds
        if old is None or old.status != leds.status:
            self._show_status(leds.status)
        if self._mute is not None and (old is None or old.mute != leds.mute):
            self._mute.value = leds.mute
        if self._speaking is not None and (old is None or old.speaking != leds.speaking):
            if not leds.speaking:
                self._speaking.off()
            elif isinstance(self._speaking, PWMLED):
                self._speaking.pulse(fade_in_time=PULSE[0], fade_out_time=PULSE[1])
            else:
                self._speaking.on()

    def _show_status(self, pattern: StatusPattern) -> None:
        led = self._status
        if led is None:
            return
        led.source = None  # stop (and join) a running double blink before anything else
        if pattern is StatusPattern.ON:
            led.on()
        elif pattern is StatusPattern.BLINK:
            led.blink(on_time=BLINK[0], off_time=BLINK[1])
        elif pattern is StatusPattern.FAST_BLINK:
            led.blink(on_time=FAST_BLINK[0], off_time=FAST_BLINK[1])
        elif pattern is StatusPattern.WAKE_LISTENING:
            led.blink(on_time=WAKE_FLASH[0], off_time=WAKE_FLASH[1])
        elif pattern is StatusPattern.AUTH_ERROR:
            led.off()
            led.source_delay = AUTH_ERROR_STEP
            led.source = itertools.cycle(AUTH_ERROR_STEPS)
        else:
            led.off()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_event = None  # no event is delivered from here on, even mid-callback
        for button in self._buttons:
            button.when_pressed = button.when_released = button.when_held = None
            # While a button is down, gpiozero's hold thread sleeps out the whole hold_time on a
            # private event that only a release sets, and Button.close() joins that thread (raising
            # ZombieThread past 10 s). Set it as a release would, so closing while someone holds
            # the button (shutdown during push-to-talk) is immediate. No callbacks are left to fire.
            inactive = getattr(button, "_inactive_event", None)
            if inactive is not None:
                inactive.set()
            self._close_device(button)
        self._buttons.clear()
        if self._encoder is not None:
            self._encoder.when_rotated_clockwise = self._encoder.when_rotated_counter_clockwise = None
            self._close_device(self._encoder)
            self._encoder = None
        for led in (self._status, self._mute, self._speaking):
            if led is not None:
                self._close_device(led, turn_off=True)
        self._status = self._mute = self._speaking = None
        if self._own_factory is not None:
            try:
                self._own_factory.close()
            except _DRIVER_ERRORS:
                log.exception("closing the GPIO chip failed")
            self._own_factory = None
        log.debug("GPIO controls closed: %s released", self.pins)

    @staticmethod
    def _close_device(device: Button | LED | PWMLED | RotaryEncoder, turn_off: bool = False) -> None:
        # Keep closing the rest when one part fails: close() must leave nothing claimed.
        try:
            if turn_off and isinstance(device, (LED, PWMLED)):
                device.source = None
                device.off()  # a closed pin keeps its level on some factories: go dark first
            device.close()
        except _DRIVER_ERRORS:
            log.exception("closing %r failed", device)


class RecordingPWMPin(MockPWMPin):
    """A gpiozero `MockPWMPin` that counts its changes so tests can wait for them without sleeping.

    Any thread changes it (gpiozero's blink/pulse threads, a test driving an input); any thread may
    wait. `states` (gpiozero's history) is trimmed so a long demo does not grow without bound.
    """

    MAX_STATES: Final = 10_000

    def __init__(self, factory: MockFactory, info: Any) -> None:
        # MockPin.__init__ already changes state (pull-up), so the counter must exist first.
        self._changed = threading.Condition()
        self.changes = 0
        super().__init__(factory, info)

    def _change_state(self, value: Any) -> bool:
        changed: bool = super()._change_state(value)
        if changed:
            with self._changed:
                self.changes += 1
                if len(self.states) > self.MAX_STATES:
                    del self.states[: -self.MAX_STATES // 2]
                self._changed.notify_all()
        return changed

    def wait_changes(self, total: int, timeout: float) -> bool:
        """Wait until `changes` reaches `total`; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.changes >= total, timeout)


class MockGpioControls(GpioControls):
    """`GpioControls` on its own `MockFactory` of `RecordingPWMPin`s (backend "mock").

    Same threads as `GpioControls`. Test controls: `factory.pin(17).drive_low()` presses the call
    button (or `press(ButtonName.CALL)`), `factory.pin(22).state` reads the status LED. Takes the
    `GpioControls` keyword arguments; `pin_factory` defaults to a fresh `MockFactory` (pass one to
    share pins between instances, e.g. to check that `close` released them).
    """

    factory: MockFactory

    def __init__(self, **options: Any) -> None:
        factory = options.pop("pin_factory", None) or MockFactory(pin_class=RecordingPWMPin)
        super().__init__(pin_factory=factory, **options)

    def pin(self, part: str) -> MockPin:
        """The mock pin of a part: "call", "mute", "volume_up", "volume_down", "encoder_a",
        "encoder_b", "status_led", "mute_led" or "speaking_led"."""
        pin: MockPin = self.factory.pin(self.pins[part])
        return pin

    def press(self, button: ButtonName = ButtonName.CALL) -> None:
        self.pin(str(button)).drive_low()

    def release(self, button: ButtonName = ButtonName.CALL) -> None:
        self.pin(str(button)).drive_high()
