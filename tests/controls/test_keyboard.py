"""KeyboardControls: keys fed through an os.pipe (or a pty for cbreak mode), LEDs drawn into a StringIO."""
from __future__ import annotations

import io
import os
import pty
import queue
import termios
from collections.abc import Callable, Iterator

import pytest

from hw.controls import (
    ButtonEvent,
    ButtonHeld,
    ButtonName,
    ButtonPressed,
    ButtonReleased,
    LedState,
    StatusPattern,
)
from hw.keyboard import KeyboardControls
from hw.registry import controls_backend

WAIT = 2.0
CALL, MUTE = ButtonName.CALL, ButtonName.MUTE


class Keys:
    """A started KeyboardControls reading from a pipe, with the events it sent."""

    def __init__(self, controls: KeyboardControls, write_fd: int, out: io.StringIO) -> None:
        self.controls = controls
        self.write_fd = write_fd
        self.out = out
        self.events: queue.Queue[ButtonEvent] = queue.Queue()
        controls.start(self.events.put)

    def type(self, text: str | bytes) -> None:
        os.write(self.write_fd, text.encode() if isinstance(text, str) else text)

    def next(self, count: int) -> list[ButtonEvent]:
        return [self.events.get(timeout=WAIT) for _ in range(count)]


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def make_keys() -> Iterator[Callable[..., Keys]]:
    opened: list[tuple[Keys, int, int]] = []

    def _make(out: io.StringIO | None = None, colour: bool | None = None) -> Keys:
        r, w = os.pipe()
        out = io.StringIO() if out is None else out
        keys = Keys(KeyboardControls(input_stream=r, output=out, colour=colour), w, out)
        opened.append((keys, r, w))
        return keys

    yield _make
    for keys, r, w in opened:
        keys.controls.close()  # stops and joins the reader before its fd goes away
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("key", ["c", " ", "C"])
def test_call_key_is_a_short_press(make_keys: Callable[..., Keys], key: str) -> None:
    keys = make_keys()
    keys.type(key)
    assert keys.next(2) == [ButtonPressed(CALL), ButtonReleased(CALL)]


def test_t_toggles_a_held_button(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("t")
    assert keys.next(1) == [ButtonPressed(CALL)]
    keys.type("t")
    assert keys.next(1) == [ButtonReleased(CALL)]


def test_c_while_talk_is_held_only_lets_go(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("tcc")
    assert keys.next(4) == [ButtonPressed(CALL), ButtonReleased(CALL), ButtonPressed(CALL), ButtonReleased(CALL)]


def test_h_is_a_long_press(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("h")
    assert keys.next(3) == [ButtonPressed(CALL), ButtonHeld(CALL), ButtonReleased(CALL)]


def test_m_is_the_mute_button(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("m")
    assert keys.next(2) == [ButtonPressed(MUTE), ButtonReleased(MUTE)]


def test_plus_and_minus_are_the_volume_buttons(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("+=-")
    up, down = ButtonName.VOLUME_UP, ButtonName.VOLUME_DOWN
    assert keys.next(6) == [ButtonPressed(up), ButtonReleased(up), ButtonPressed(up), ButtonReleased(up),
                            ButtonPressed(down), ButtonReleased(down)]


def test_escape_sequences_and_unknown_keys_are_ignored(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("\x1b[Cx\x1b[1;5Cé\nm")  # right arrow ends in "C", ctrl-right, junk: none is "call"
    assert keys.next(2) == [ButtonPressed(MUTE), ButtonReleased(MUTE)]
    assert keys.events.empty()


def test_lines_of_keys(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.type("cm\n")
    assert keys.next(4) == [ButtonPressed(CALL), ButtonReleased(CALL), ButtonPressed(MUTE), ButtonReleased(MUTE)]


def test_end_of_input_stops_the_reader(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    assert keys.controls.reading
    os.close(keys.write_fd)
    keys.write_fd = os.open(os.devnull, os.O_WRONLY)  # keep the fixture's close() valid
    reader = keys.controls._reader
    assert reader is not None
    reader.join(WAIT)
    assert not keys.controls.reading


def test_help_is_printed_at_start(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    assert "c/space = call" in keys.out.getvalue()


def test_show_draws_the_status_line(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.controls.show(LedState(status=StatusPattern.BLINK))
    keys.controls.show(LedState(status=StatusPattern.BLINK))  # unchanged: not drawn again
    keys.controls.show(LedState(status=StatusPattern.ON, mute=True, speaking=True))
    lines = keys.out.getvalue().splitlines()[1:]  # after the help line
    assert lines == [
        "[status: \u25cb] [mute: \u25cb] [speaking: \u25cb]",   # drawn from the start
        "[status: \u25cf blinking] [mute: \u25cb] [speaking: \u25cb]",
        "[status: \u25cf on] [mute: \u25cf muted] [speaking: \u25cf speaking]",
    ]
    assert "\x1b[" not in keys.out.getvalue()  # no colours when the output is not a terminal


def test_terminal_output_redraws_in_place_with_colours(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys(out=TtyStringIO())
    keys.controls.show(LedState(status=StatusPattern.AUTH_ERROR, mute=True))
    drawn = keys.out.getvalue()
    assert drawn.endswith(keys.controls.render(LedState(status=StatusPattern.AUTH_ERROR, mute=True)))
    assert "\r\x1b[2K" in drawn and "\x1b[31m\u25cf muted" in drawn
    assert "auth error" in drawn
    keys.controls.close()
    assert keys.out.getvalue().endswith("\n")  # the status line is left behind, not overwritten


def test_the_led_line_is_drawn_at_start_and_log_lines_scroll_above_it(make_keys: Callable[..., Keys]) -> None:
    out = TtyStringIO()
    keys = make_keys(out=out)
    idle = keys.controls.render(LedState())
    assert out.getvalue().endswith(idle)   # before any `show`: the idle LEDs (all off) are drawn
    log = keys.controls.above(out)         # the same terminal, as stderr and stdout usually are
    log.write("12:00:00 INFO device: a log line\n")
    after = out.getvalue()
    # The status line is cleared, the log line printed on its own line, the status line redrawn.
    assert after.endswith(f"{idle}\r\x1b[2K12:00:00 INFO device: a log line\n{idle}")
    keys.controls.show(LedState(mute=True))
    log.write("another\n")
    assert out.getvalue().endswith("another\n" + keys.controls.render(LedState(mute=True)))


def test_close_is_idempotent_and_stops_the_reader(make_keys: Callable[..., Keys]) -> None:
    keys = make_keys()
    keys.controls.show(LedState(mute=True))
    keys.controls.close()
    keys.controls.close()
    assert not keys.controls.reading
    assert keys.controls.leds == LedState()  # drawn dark on the way out
    assert keys.out.getvalue().splitlines()[-1].startswith("[status: \u25cb]")


def test_a_terminal_is_put_in_cbreak_mode_and_restored() -> None:
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        controls = KeyboardControls(input_stream=slave, output=io.StringIO())
        events: queue.Queue[ButtonEvent] = queue.Queue()
        controls.start(events.put)
        try:
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # one key at a time
            os.write(master, b"m")  # no Enter needed
            assert [events.get(timeout=WAIT), events.get(timeout=WAIT)] == [
                ButtonPressed(MUTE), ButtonReleased(MUTE),
            ]
        finally:
            controls.close()
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_registry_keyboard_backend() -> None:
    r, w = os.pipe()
    try:
        controls = controls_backend("keyboard", input_stream=r, output=io.StringIO())
        assert isinstance(controls, KeyboardControls)
        controls.close()  # never started: still fine
    finally:
        os.close(r)
        os.close(w)
