"""GpioControls on gpiozero's own mock pins: one private MockFactory per test, never the global one."""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gpiozero import LED, Button, Device
from gpiozero.pins.mock import MockFactory, MockPin

from hw.controls import (
    ButtonEvent,
    ButtonHeld,
    ButtonName,
    ButtonPressed,
    ButtonReleased,
    LedState,
    NoControls,
    StatusPattern,
)
from hw.errors import DeviceUnavailable, UnknownBackend
from hw.gpio import GpioControls, MockGpioControls, RecordingPWMPin
from hw.registry import controls_backend
from tests.pin_factory import preserved_pin_factory

WAIT = 2.0  # every wait is bounded by this
CALL, MUTE = ButtonName.CALL, ButtonName.MUTE
CALL_PIN, MUTE_PIN, STATUS_PIN, MUTE_LED_PIN, SPEAKING_PIN = 17, 27, 22, 23, 24


class Sink:
    """The on_event callback: enqueues, as the service's sink does; tests wait on it (bounded)."""

    def __init__(self) -> None:
        self.events: queue.Queue[ButtonEvent] = queue.Queue()

    def __call__(self, event: ButtonEvent) -> None:
        self.events.put(event)

    def next(self) -> ButtonEvent:
        return self.events.get(timeout=WAIT)

    def empty(self) -> bool:
        return self.events.empty()


@pytest.fixture(autouse=True)
def global_factory_untouched() -> Iterator[None]:
    before = Device.pin_factory
    yield
    assert Device.pin_factory is before


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=RecordingPWMPin)
    yield f
    f.reset()


@pytest.fixture
def make(factory: MockFactory) -> Iterator[Callable[..., GpioControls]]:
    made: list[GpioControls] = []

    def _make(**options: Any) -> GpioControls:
        options.setdefault("hold_seconds", 60.0)  # no stray ButtonHeld unless a test asks for one
        controls = GpioControls(pin_factory=factory, **options)
        made.append(controls)
        return controls

    yield _make
    for controls in made:
        controls.close()


def pin(factory: MockFactory, number: int) -> RecordingPWMPin:
    p: RecordingPWMPin = factory.pin(number)
    return p


# -- buttons -------------------------------------------------------------------------------------
def test_call_button_press_and_release(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls, sink = make(), Sink()
    controls.start(sink)
    factory.pin(CALL_PIN).drive_low()
    assert sink.next() == ButtonPressed(CALL)
    factory.pin(CALL_PIN).drive_high()
    assert sink.next() == ButtonReleased(CALL)


def test_mute_button(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls, sink = make(), Sink()
    controls.start(sink)
    factory.pin(MUTE_PIN).drive_low()
    factory.pin(MUTE_PIN).drive_high()
    assert [sink.next(), sink.next()] == [ButtonPressed(MUTE), ButtonReleased(MUTE)]


def test_long_press_sends_held_between_press_and_release(
    make: Callable[..., GpioControls], factory: MockFactory
) -> None:
    controls, sink = make(hold_seconds=0.05), Sink()
    controls.start(sink)
    factory.pin(CALL_PIN).drive_low()
    assert sink.next() == ButtonPressed(CALL)
    assert sink.next() == ButtonHeld(CALL)  # from gpiozero's hold thread
    factory.pin(CALL_PIN).drive_high()
    assert sink.next() == ButtonReleased(CALL)


def test_no_events_before_start_or_after_close(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls, sink = make(), Sink()
    factory.pin(CALL_PIN).drive_low()  # mock pins call back synchronously: nothing can be in flight
    factory.pin(CALL_PIN).drive_high()
    controls.start(sink)
    controls.close()
    factory.pin(CALL_PIN).drive_low()
    assert sink.empty()


def test_a_failing_handler_does_not_break_the_button(
    make: Callable[..., GpioControls], factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    calls = 0

    def flaky(event: ButtonEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        sink(event)

    controls = make()
    controls.start(flaky)
    with caplog.at_level(logging.ERROR):
        factory.pin(CALL_PIN).drive_low()
    assert "handler failed" in caplog.text
    factory.pin(CALL_PIN).drive_high()
    assert sink.next() == ButtonReleased(CALL)


# -- LEDs ----------------------------------------------------------------------------------------
def test_status_on_and_off(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls = make()
    controls.show(LedState(status=StatusPattern.ON))
    assert pin(factory, STATUS_PIN).state == 1
    controls.show(LedState(status=StatusPattern.OFF))
    assert pin(factory, STATUS_PIN).state == 0


@pytest.mark.parametrize("pattern, changes", [(StatusPattern.BLINK, 2), (StatusPattern.FAST_BLINK, 4)])
def test_status_blinks_by_itself(
    make: Callable[..., GpioControls], factory: MockFactory, pattern: StatusPattern, changes: int
) -> None:
    controls, led = make(), pin(factory, STATUS_PIN)
    start = led.changes
    controls.show(LedState(status=pattern))
    assert led.wait_changes(start + changes, WAIT)  # on, off, ... with no further calls from us
    assert [s.state for s in led.states[-changes:]] == [1, 0] * (changes // 2)


def test_auth_error_is_a_double_blink(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls, led = make(), pin(factory, STATUS_PIN)
    start = led.changes
    controls.show(LedState(status=StatusPattern.AUTH_ERROR))
    assert led.wait_changes(start + 5, WAIT)  # on, off, on, off, (long dark), on
    on1, off1, on2, off2, on3 = led.states[-5:]
    assert [on1.state, off1.state, on2.state, off2.state, on3.state] == [1, 0, 1, 0, 1]
    # What makes it a double blink: the dark after the pair is much longer than the gap inside it
    # (0.75 s against 0.15 s; checked with a wide margin, not as a timing measurement).
    short_gap, long_gap = on2.timestamp, on3.timestamp
    assert long_gap > 2.5 * short_gap


def test_blinking_stops_when_the_pattern_changes(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls, led = make(), pin(factory, STATUS_PIN)
    for pattern in (StatusPattern.FAST_BLINK, StatusPattern.AUTH_ERROR):
        controls.show(LedState(status=pattern))
        assert led.wait_changes(led.changes + 2, WAIT)
        device = controls._status
        assert device is not None
        running = device._blink_thread or device._source_thread   # gpiozero's pattern threads
        assert running is not None and running.is_alive()
        controls.show(LedState(status=StatusPattern.OFF))
        assert led.state == 0
        # No wall-time wait to show nothing changes: what could change the pin (gpiozero's blink
        # or source thread) has been stopped and joined by the time show() returns.
        assert device._blink_thread is None and device._source_thread is None
        assert not running.is_alive()


def test_mute_led(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls = make()
    controls.show(LedState(mute=True))
    assert pin(factory, MUTE_LED_PIN).state == 1
    controls.show(LedState(mute=False))
    assert pin(factory, MUTE_LED_PIN).state == 0


def test_speaking_led_pulses_on_a_pwm_pin(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls, led = make(), pin(factory, SPEAKING_PIN)
    assert controls.speaking_pulses
    start = led.changes
    controls.show(LedState(speaking=True))
    assert led.wait_changes(start + 3, WAIT)
    assert any(0 < s.state < 1 for s in led.states[-3:])  # a fade, not just on/off
    controls.show(LedState(speaking=False))
    assert led.state == 0


def test_speaking_led_solid_when_pwm_is_off(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls = make(speaking_led_pwm=False)
    assert not controls.speaking_pulses
    controls.show(LedState(speaking=True))
    assert pin(factory, SPEAKING_PIN).state == 1


def test_speaking_led_falls_back_to_solid_without_pwm_pins() -> None:
    factory = MockFactory(pin_class=MockPin)  # pins that refuse PWM
    controls = GpioControls(pin_factory=factory)
    try:
        assert not controls.speaking_pulses
        controls.show(LedState(speaking=True))
        assert factory.pin(SPEAKING_PIN).state == 1
    finally:
        controls.close()


def test_active_low_leds(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls = make(active_high_leds=False)
    assert pin(factory, STATUS_PIN).state == 1  # off
    controls.show(LedState(status=StatusPattern.ON, mute=True))
    assert pin(factory, STATUS_PIN).state == 0
    assert pin(factory, MUTE_LED_PIN).state == 0


def test_show_only_touches_what_changed(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls = make()
    controls.show(LedState(status=StatusPattern.ON, mute=True))
    counts = {n: pin(factory, n).changes for n in (STATUS_PIN, MUTE_LED_PIN, SPEAKING_PIN)}
    controls.show(LedState(status=StatusPattern.ON, mute=True))
    controls.show(LedState(status=StatusPattern.ON, mute=True, indicator=LedState().indicator))
    assert {n: pin(factory, n).changes for n in counts} == counts
    controls.show(LedState(status=StatusPattern.ON, mute=False))
    assert pin(factory, STATUS_PIN).changes == counts[STATUS_PIN]
    assert pin(factory, MUTE_LED_PIN).changes == counts[MUTE_LED_PIN] + 1
    assert controls.leds == LedState(status=StatusPattern.ON, mute=False)


def test_parts_can_be_left_out(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    bare = make(call_pin=None, mute_pin=None, status_led_pin=None, mute_led_pin=None, speaking_led_pin=None)
    bare.start(Sink())
    bare.show(LedState(status=StatusPattern.BLINK, mute=True, speaking=True))
    assert bare.pins == {}
    bare.close()

    controls, sink = make(mute_pin=None, mute_led_pin=None, speaking_led_pin=None), Sink()
    controls.start(sink)
    controls.show(LedState(status=StatusPattern.ON, mute=True, speaking=True))
    assert pin(factory, STATUS_PIN).state == 1
    factory.pin(MUTE_PIN).drive_low()  # not wired to anything
    factory.pin(CALL_PIN).drive_low()
    assert sink.next() == ButtonPressed(CALL)


# -- close ---------------------------------------------------------------------------------------
def test_close_turns_leds_off_and_releases_pins(make: Callable[..., GpioControls], factory: MockFactory) -> None:
    controls = make()
    controls.show(LedState(status=StatusPattern.FAST_BLINK, mute=True, speaking=True))
    controls.close()
    controls.close()  # idempotent
    for number in (STATUS_PIN, MUTE_LED_PIN, SPEAKING_PIN):
        assert pin(factory, number).state == 0
    again, sink = make(), Sink()  # the same pins on the same factory: claimable again
    again.start(sink)
    factory.pin(CALL_PIN).drive_low()
    assert sink.next() == ButtonPressed(CALL)


def test_close_while_a_button_is_held_is_immediate(factory: MockFactory) -> None:
    controls = GpioControls(pin_factory=factory, hold_seconds=60.0)
    controls.start(Sink())
    factory.pin(CALL_PIN).drive_low()  # someone keeps holding the button during shutdown
    done = threading.Event()

    def close() -> None:
        controls.close()
        done.set()

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    assert done.wait(WAIT)  # not after hold_seconds (gpiozero would raise ZombieThread at 10 s)


def test_busy_pin_raises_device_unavailable_and_releases_the_rest(factory: MockFactory) -> None:
    squatter = LED(STATUS_PIN, pin_factory=factory)
    try:
        with pytest.raises(DeviceUnavailable, match="GPIO22"):
            GpioControls(pin_factory=factory)
        # The buttons claimed before the failure were released by the half-finished __init__.
        Button(CALL_PIN, pin_factory=factory).close()
        Button(MUTE_PIN, pin_factory=factory).close()
    finally:
        squatter.close()


# -- registry ------------------------------------------------------------------------------------
def test_registry_mock_backend_has_its_own_factory() -> None:
    a = controls_backend("mock", hold_seconds=60.0)
    b = controls_backend("mock", hold_seconds=60.0)
    try:
        assert isinstance(a, MockGpioControls) and isinstance(b, MockGpioControls)
        assert a.factory is not b.factory  # two instances can both own GPIO17
        sink = Sink()
        a.start(sink)
        a.factory.pin(CALL_PIN).drive_low()
        assert sink.next() == ButtonPressed(CALL)
        a.release(CALL)
        assert sink.next() == ButtonReleased(CALL)
        a.show(LedState(mute=True))
        assert a.pin("mute_led").state == 1
    finally:
        a.close()
        b.close()


def test_registry_none_backend_records_leds() -> None:
    controls = controls_backend("none")
    assert isinstance(controls, NoControls)
    controls.start(Sink())
    controls.show(LedState(mute=True))
    controls.show(LedState(mute=True))
    assert controls.leds == LedState(mute=True)
    assert controls.history == [LedState(mute=True)]
    controls.close()
    controls.close()


def test_gpiozero_backend_without_gpio_raises_device_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # gpiozero consults GPIOZERO_PIN_FACTORY only while no global factory is set: start from none
    # (tests/conftest.py's fixture puts back whatever was there), so this runs in any order, anywhere.
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")  # honoured by gpiozero itself
    with pytest.raises(DeviceUnavailable, match="call button on GPIO17.*no-such-factory"):
        controls_backend("gpiozero")


def test_a_global_factory_a_test_leaves_is_closed_and_the_saved_one_restored() -> None:
    saved = Device.pin_factory
    with preserved_pin_factory():
        leaked = MockFactory()
        Device.pin_factory = leaked
        LED(CALL_PIN)              # no pin_factory=: on the global one, as the "gpiozero" backend does
        assert leaked.pins
    assert Device.pin_factory is saved
    assert not leaked.pins         # closed: its pins are free for the next test


def test_registry_unknown_backend() -> None:
    with pytest.raises(UnknownBackend, match="mock"):
        controls_backend("serial")


# -- volume ----------------------------------------------------------------------------------------
def test_volume_buttons_and_rotary_encoder(factory: MockFactory) -> None:
    controls = GpioControls(call_pin=None, mute_pin=None, status_led_pin=None, mute_led_pin=None,
                            speaking_led_pin=None, bounce_ms=0, volume_up_pin=5, volume_down_pin=6,
                            encoder_a_pin=20, encoder_b_pin=21, pin_factory=factory)
    sink = Sink()
    controls.start(sink)
    up, down = ButtonName.VOLUME_UP, ButtonName.VOLUME_DOWN
    factory.pin(5).drive_low()
    factory.pin(5).drive_high()
    assert [sink.next(), sink.next()] == [ButtonPressed(up), ButtonReleased(up)]
    factory.pin(6).drive_low()
    assert sink.next() == ButtonPressed(down)
    factory.pin(6).drive_high()
    assert sink.next() == ButtonReleased(down)
    a, b = factory.pin(20), factory.pin(21)
    # One detent clockwise: A leads B (pins go low when their contact closes to ground).
    for step in (a.drive_low, b.drive_low, a.drive_high, b.drive_high):
        step()
    assert sink.next() == ButtonPressed(up)
    for step in (b.drive_low, a.drive_low, b.drive_high, a.drive_high):
        step()
    assert sink.next() == ButtonPressed(down)
    assert sink.empty()
    assert controls.pins == {"volume_up": 5, "volume_down": 6, "encoder_a": 20, "encoder_b": 21}
    controls.close()
    for pin in (5, 6, 20, 21):  # released: another device may claim them
        Button(pin, pin_factory=factory).close()
