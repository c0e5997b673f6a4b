"""Terminal keys as buttons and a status line as LEDs (backend "keyboard", `run --keys` on a host).

Keys (case-insensitive):

| key         | button events                                        | like on the device            |
| ----------- | ---------------------------------------------------- | ----------------------------- |
| `c`, space  | call: pressed, released                              | a short press                 |
| `t`         | call: pressed; the next `t` (or `c`) released        | holding the button (push to talk) |
| `h`         | call: pressed, held, released                        | a long press (ends the call)  |
| `m`         | mute: pressed, released                              | the mute button               |
| `+`, `=`    | volume up: pressed, released                         | the volume-up button (or a detent) |
| `-`         | volume down: pressed, released                       | the volume-down button        |
| `?`         | (prints this help)                                   |                               |

A terminal reports no key-up, so a short press is a press and a release at once, and a hold is a
toggle. A long press sends the full sequence a real button makes (pressed, then held, then
released), so the state machine sees exactly what the GPIO backend would send.

When the input is a terminal it is put in cbreak mode (one key at a time, no echo; Ctrl-C still
interrupts) and restored on `close` (and at exit, should `close` be skipped). When it is not a
terminal (a pipe, a file, a test), input is read as it comes and each character of a line is one
key, so `printf 'cm\n'` works. The LEDs are drawn as one line, redrawn in place with colours on a
terminal, or appended as plain lines otherwise.
"""
from __future__ import annotations

import atexit
import codecs
import io
import logging
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import Any, Final, Protocol, TextIO, cast

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

log = logging.getLogger(__name__)

HELP: Final = ("keys: c/space = call, t = talk (hold on/off), h = long press, m = mute, "
               "+/- = volume, ? = help")
POLL_SECONDS: Final = 1.0  # backstop only: stop() wakes the reader through a pipe

_RESET: Final = "\x1b[0m"
_CLEAR_LINE: Final = "\r\x1b[2K"
_STATUS_TEXT: Final[dict[StatusPattern, tuple[str, str]]] = {
    # pattern: (text, ANSI colour) -- the same meanings as the GPIO status LED
    StatusPattern.OFF: ("off", "2"),
    StatusPattern.BLINK: ("blinking", "33"),
    StatusPattern.ON: ("on", "32"),
    StatusPattern.FAST_BLINK: ("fast blink: error", "31"),
    StatusPattern.AUTH_ERROR: ("double blink: auth error", "35"),
    StatusPattern.WAKE_LISTENING: ("flash: listening for the wake word", "34"),
}


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class _KeyReader(threading.Thread):
    """The one thread that reads the keyboard.

    It waits in select() on the input and on a wake-up pipe, so `stop()` ends it at once (the
    select timeout is only a backstop). Input errors and end of input end the thread (logged
    once); errors in the key handler are the handler's business (`deliver` logs them) and never
    end it.
    """

    def __init__(self, fd: int, on_text: Callable[[str], None]) -> None:
        # daemon only as a safety net: close() always stops and joins it.
        super().__init__(name="keyboard-controls", daemon=True)
        self.stopping = threading.Event()
        self._fd = fd
        self._on_text = on_text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._wake_r, self._wake_w = os.pipe()

    def run(self) -> None:
        try:
            self._read_until_stopped()
        finally:
            os.close(self._wake_r)

    def _read_until_stopped(self) -> None:
        while not self.stopping.is_set():
            try:
                ready, _, _ = select.select([self._fd, self._wake_r], [], [], POLL_SECONDS)
                if self._fd not in ready:
                    continue
                data = os.read(self._fd, 256)
            except (OSError, ValueError) as exc:  # ValueError: the fd was closed under us
                log.warning("keyboard input failed, keys are off: %s", exc)
                return
            if not data:
                log.info("keyboard input ended: no more key presses")
                return
            self._on_text(self._decoder.decode(data))

    def stop(self, timeout: float = 2.0) -> None:
        self.stopping.set()
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # the reader already ended (end of input) and closed its side
                pass
            os.close(self._wake_w)
            self._wake_w = -1
        if self.ident is None:  # never started: run() will not close its side of the pipe
            os.close(self._wake_r)
        elif self.is_alive():
            self.join(timeout)
            if self.is_alive():
                log.warning("keyboard reader did not stop within %.1f s", timeout)


class KeyboardControls(Controls):
    """Terminal keys as buttons, LEDs drawn as a status line (a host running `run --keys`).

    Threads: construct, `start`, `show` and `close` on the main thread; keys are read on one
    thread this object owns (started by `start`, stopped and joined by `close`), which only calls
    `on_event`. Output writes are serialised by a lock (the help text is printed by the reader).
    `input_stream` is a file descriptor or anything with `fileno()` (default stdin); `output` any
    text stream (default stdout); `colour` defaults to whether `output` is a terminal.
    """

    def __init__(
        self,
        input_stream: int | HasFileno | None = None,
        output: TextIO | None = None,
        colour: bool | None = None,
    ) -> None:
        source = sys.stdin if input_stream is None else input_stream
        self._fd = source if isinstance(source, int) else source.fileno()
        self._out = sys.stdout if output is None else output
        self._tty_out = _isatty(self._out)
        self._colour = self._tty_out if colour is None else colour
        self._on_event: EventSink | None = None
        self._reader: _KeyReader | None = None
        self._saved_termios: list[Any] | None = None
        self._out_lock = threading.Lock()
        self._talking = False    # `t` toggled the call button down (reader thread only)
        self._escape = -1        # chars seen in a terminal escape sequence, -1 outside one
        self._closed = False
        self.leds = None

    @classmethod
    def from_settings(cls, settings: object) -> KeyboardControls:
        """Stdin and stdout (`hw.registry`, `run --keys`); no setting is read: keys have no pins."""
        return cls()

    @property
    def reading(self) -> bool:
        """Whether the reader thread is still taking keys (False before start, after EOF or close)."""
        return self._reader is not None and self._reader.is_alive()

    # -- Controls --------------------------------------------------------------------------------
    def start(self, on_event: EventSink) -> None:
        if self._closed or self._reader is not None:
            raise RuntimeError("KeyboardControls can be started once")
        self._on_event = on_event
        if os.isatty(self._fd):
            self._saved_termios = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
            atexit.register(self._restore_terminal)
        self._write_above(HELP)
        # Drawn from the start: the first LED state (all off when idle) equals the default, so
        # the service's first `show` would otherwise draw nothing until something changes.
        self.leds = LedState()
        self._draw(self.leds)
        self._reader = _KeyReader(self._fd, self._feed)
        self._reader.start()

    def show(self, leds: LedState) -> None:
        if self._closed or leds == self.leds:
            return
        self.leds = leds
        self._draw(leds)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_event = None
        if self._reader is not None:
            self._reader.stop()
        self._restore_terminal()
        atexit.unregister(self._restore_terminal)
        if self.leds is not None and self.leds != LedState():
            self.leds = LedState()
            self._draw(self.leds)
        if self._tty_out:
            self._write("\n")  # leave the status line behind, cursor on a fresh line

    # -- keys (reader thread) --------------------------------------------------------------------
    def _feed(self, text: str) -> None:
        for ch in text:
            if self._escape >= 0:
                # Skip a whole escape sequence (arrow keys send ESC [ C: that C is not "call").
                self._escape += 1
                if not (self._escape == 1 and ch in "[O") and "@" <= ch <= "~":
                    self._escape = -1
                continue
            if ch == "\x1b":
                self._escape = 0
                continue
            self._key(ch.lower())

    def _key(self, key: str) -> None:
        call = ButtonName.CALL
        events: list[ButtonEvent]
        if key in (" ", "c"):
            # While `t` holds the button down, a press can only mean letting go.
            events = [ButtonReleased(call)] if self._talking else [ButtonPressed(call), ButtonReleased(call)]
            self._talking = False
        elif key == "t":
            events = [ButtonReleased(call) if self._talking else ButtonPressed(call)]
            self._talking = not self._talking
        elif key == "h":
            events = [ButtonHeld(call), ButtonReleased(call)]
            if not self._talking:
                events.insert(0, ButtonPressed(call))
            self._talking = False
        elif key == "m":
            events = [ButtonPressed(ButtonName.MUTE), ButtonReleased(ButtonName.MUTE)]
        elif key in ("+", "=", "-"):
            button = ButtonName.VOLUME_DOWN if key == "-" else ButtonName.VOLUME_UP
            events = [ButtonPressed(button), ButtonReleased(button)]
        elif key == "?":
            self._write_above(HELP)
            return
        else:
            if not key.isspace():
                log.debug("key %r does nothing (%s)", key, HELP)
            return
        for event in events:
            deliver(self._on_event, event)

    # -- drawing ---------------------------------------------------------------------------------
    def render(self, leds: LedState) -> str:
        """The status line for `leds` (with ANSI colours when `colour` is on)."""
        text, colour = _STATUS_TEXT[leds.status]
        lit = leds.status is not StatusPattern.OFF
        parts = [
            f"[status: {self._lamp(lit, text, colour)}]",
            f"[mute: {self._lamp(leds.mute, 'muted', '31')}]",
            f"[speaking: {self._lamp(leds.speaking, 'speaking', '36')}]",
        ]
        return " ".join(parts)

    def _lamp(self, lit: bool, text: str, colour: str) -> str:
        lamp = f"\u25cf {text}" if lit else "\u25cb"
        if lit and self._colour:
            return f"\x1b[{colour}m{lamp}{_RESET}"
        return lamp

    def _draw(self, leds: LedState) -> None:
        line = self.render(leds)
        self._write(_CLEAR_LINE + line if self._tty_out else line + "\n")

    def _write_above(self, text: str) -> None:
        """Print a line of text without losing the status line on a terminal."""
        if not self._tty_out:
            self._write(text + "\n")
            return
        status = self.render(self.leds) if self.leds is not None else ""
        self._write(f"{_CLEAR_LINE}{text}\n{status}")

    def above(self, stream: TextIO) -> TextIO:
        """`stream` (the log's stderr) wrapped so each write clears the status line first and
        redraws it after: log lines then scroll above it instead of being glued to it."""
        return cast(TextIO, _AboveStatusLine(self, stream))

    def _write_other(self, stream: TextIO, text: str) -> None:
        if not self._tty_out or self._closed:
            stream.write(text)
            stream.flush()
            return
        with self._out_lock:
            try:
                self._out.write(_CLEAR_LINE)
                self._out.flush()
                stream.write(text)
                stream.flush()
                if text.endswith("\n") and self.leds is not None:
                    self._out.write(self.render(self.leds))
                    self._out.flush()
            except (OSError, ValueError) as exc:
                log.debug("cannot draw the LEDs: %s", exc)

    def _write(self, text: str) -> None:
        with self._out_lock:
            try:
                self._out.write(text)
                self._out.flush()
            except (OSError, ValueError) as exc:  # a closed or broken terminal must not stop the device
                log.debug("cannot draw the LEDs: %s", exc)

    def _restore_terminal(self) -> None:
        saved, self._saved_termios = self._saved_termios, None
        if saved is not None:
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, saved)
            except (OSError, termios.error) as exc:
                log.warning("cannot restore the terminal mode: %s", exc)


class _AboveStatusLine(io.TextIOBase):
    """A text stream whose writes go above the keyboard's status line (see `above`)."""

    def __init__(self, keys: KeyboardControls, stream: TextIO) -> None:
        self._keys = keys
        self._stream = stream

    def write(self, text: str) -> int:
        self._keys._write_other(self._stream, text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
