"""Fake microphone and speaker: WAV in, WAV out, paced by an injectable clock, with a room.

These are product code (the demo and the tests run on them), with controls for tests:
`inject()` adds a mic signal, `unplug()`/`replug()` make a device vanish and come back, and the
speaker keeps what it played (`played`) and a bounded log of every write and drop it was given
(`speaker_history`, `wait_speaker`) for assertions. The optional `FakeRoom` (hw/room.py) adds the
speaker's output back into the microphone with a delay, a gain, an impulse response and, when set,
clock drift, speaker distortion and ambient noise, so echo cancellation and barge-in can be tried
on a laptop. `FakeAudioBackend.from_settings` builds the pair, room
included, from the `fake_*` settings (`hw.settings.FakeAudioSettings`).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np

from hw.audio import BYTES_PER_FRAME, AudioBackend, AudioCapture, AudioFormat, AudioPlayback, VolumeControl
from hw.clock import Clock, RealClock, UnpacedClock
from hw.errors import DeviceUnavailable
from hw.room import FakeRoom  # re-exported: the room lives in hw/room.py
from hw.settings import FakeAudioSettings
from hw.wavio import WavRecorder, read_wav_mono16

log = logging.getLogger(__name__)

ClockFactory = Callable[[], Clock]

# The mic rate a room built from settings works at: the rate the application captures at
# (`device.audio.formats.DSP_RATE`, which hw cannot import; tests/dsp/test_room.py checks they agree).
ROOM_MIC_RATE: Final = 16000
# Speaker writes and drops kept for assertions: 20 s of 10 ms periods (older ones are forgotten,
# and `speaker_history` says so rather than returning a silently shortened list).
SPEAKER_LOG_OPS: Final = 2000


def _join_clock(clock: Clock, device: object, join: bool) -> None:
    """Register an open device with a shared lockstep clock (other clocks need nothing)."""
    registered = getattr(device, "_clock_registered", False)
    if join and not registered and hasattr(clock, "register"):
        clock.register()
        device._clock_registered = True  # type: ignore[attr-defined]
    elif not join and registered:
        clock.unregister()  # type: ignore[attr-defined]
        device._clock_registered = False  # type: ignore[attr-defined]


class _Plug:
    """Whether a fake device is plugged in; flipped by tests (any thread)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._present = threading.Event()
        self._present.set()

    @property
    def present(self) -> bool:
        return self._present.is_set()

    def unplug(self) -> None:
        self._present.clear()

    def replug(self) -> None:
        self._present.set()

    def check(self) -> None:
        if not self._present.is_set():
            raise DeviceUnavailable(self.name, "device unplugged")


@dataclass(frozen=True)
class SpeakerOp:
    """One call the fake speaker took, in order: a `write` (with its PCM) or a `drop`.

    `seq` numbers every op of the backend's speakers from 0 (it keeps counting across reopens
    and past the bounded log); `rate` is the device's rate; `discarded_frames` is, for a drop,
    how many frames were queued and not yet played (0 for a write).
    """

    seq: int
    kind: Literal["write", "drop"]
    rate: int
    pcm: bytes = b""
    discarded_frames: int = 0


class FakeCapture(AudioCapture):
    """A mic that plays a WAV once, then silence, plus injected audio and room echo, in real time."""

    def __init__(self, backend: FakeAudioBackend, sample_rate: int, period_frames: int) -> None:
        self._backend = backend
        self.format = AudioFormat(sample_rate, period_frames, period_frames * 4)
        self._clock = backend.clock_factory()
        self._t0 = 0.0
        self._periods = 0
        self._opened = False

    def open(self) -> AudioFormat:
        self._backend.capture_plug.check()
        _join_clock(self._clock, self, True)
        self._t0 = self._clock.monotonic()
        self._periods = 0
        self._opened = True
        self._backend.note_capture_open(self)
        return self.format

    def read(self) -> bytes:
        if not self._opened:
            raise DeviceUnavailable(self._backend.capture_plug.name, "read on a closed device")
        self._periods += 1
        self._clock.sleep_until(self._t0 + self._periods * self.format.period_seconds)
        self._backend.capture_plug.check()
        frames = self.format.period_frames
        if self._backend.room is None:
            pcm = self._backend.next_mic_pcm(frames)
            if pcm is not None:
                return pcm
        signal = self._backend.next_mic_samples(frames, self.format.sample_rate)
        if self._backend.room is not None:
            signal = signal + self._backend.room.mic_sound(frames)
        return np.clip(np.round(signal), -32768, 32767).astype("<i2").tobytes()

    def close(self) -> None:
        self._opened = False
        _join_clock(self._clock, self, False)


class FakePlayback(AudioPlayback):
    """A speaker that plays in real time by the clock, records what it played and feeds the room.

    `write` blocks while `buffer_frames` are queued ahead of the play position, like a sound card.
    `drop` discards what is queued and not yet played; the recording holds only what was played.
    """

    def __init__(self, backend: FakeAudioBackend, sample_rate: int, period_frames: int, buffer_periods: int) -> None:
        self._backend = backend
        self.format = AudioFormat(sample_rate, period_frames, period_frames * buffer_periods)
        self._clock = backend.clock_factory()
        self._t0 = 0.0
        self._written = 0  # frames handed to the device since open (the device timeline)
        self._queued: deque[tuple[int, bytes]] = deque()  # (start frame, pcm) not yet played
        self._opened = False
        # For tests: how many frames were still queued (unplayed) at each write, counted by depth
        # since the last open. A writer on time shows buffer_frames - period_frames every time.
        self.depth_at_write: Counter[int] = Counter()

    def _play_position(self) -> int:
        # The tolerance keeps float error (0.03 s * 16000 = 479.999...) from losing a frame.
        return int((self._clock.monotonic() - self._t0) * self.format.sample_rate + 1e-6)

    def open(self) -> AudioFormat:
        self._backend.playback_plug.check()
        _join_clock(self._clock, self, True)
        self._t0 = self._clock.monotonic()
        self._written = 0
        self._queued.clear()
        self.depth_at_write.clear()
        self._opened = True
        return self.format

    def _retire_played(self, position: int) -> None:
        while self._queued:
            start, pcm = self._queued[0]
            if start + len(pcm) // BYTES_PER_FRAME > position:
                break
            self._queued.popleft()
            self._backend.record_played(pcm, self.format.sample_rate)

    def write(self, pcm: bytes) -> None:
        if not self._opened:
            raise DeviceUnavailable(self._backend.playback_plug.name, "write on a closed device")
        self._backend.playback_plug.check()
        frames = len(pcm) // BYTES_PER_FRAME
        fmt = self.format
        # Wait for room in the device buffer.
        self._clock.sleep_until(self._t0 + (self._written + frames - fmt.buffer_frames) / fmt.sample_rate)
        position = self._play_position()
        self._retire_played(position)
        if position > self._written:
            # The writer was late: the device ran dry and played silence (an underrun).
            self.underruns += 1
            gap = position - self._written
            self._backend.record_played(bytes(gap * BYTES_PER_FRAME), fmt.sample_rate)
            self._written = position
        self.depth_at_write[self._written - position] += 1
        self._queued.append((self._written, pcm))
        self._written += frames
        self._backend.speaker_queued(pcm, fmt.sample_rate)
        self._backend.note_speaker_op("write", fmt.sample_rate, pcm=pcm)

    def drop(self) -> None:
        position = self._play_position()
        self._retire_played(position)
        discarded = max(0, self._written - max(position, 0))
        if self._queued:
            start, pcm = self._queued.popleft()
            played = max(0, position - start) * BYTES_PER_FRAME
            self._backend.record_played(pcm[:played], self.format.sample_rate)
        self._queued.clear()
        self._written = max(position, 0) if self._written > position else self._written
        self._backend.note_speaker_op("drop", self.format.sample_rate, discarded_frames=discarded)

    def close(self) -> None:
        if self._opened:
            self._queued.clear()
        self._opened = False
        _join_clock(self._clock, self, False)


class FakeVolumeControl(VolumeControl):
    """A hardware mixer stand-in: scales what the fake speaker puts into the room and the
    recording, after the pipeline's reference tap, as a sound card's mixer does. Any thread reads
    `gain`; one thread sets it. `history` lists every dB set (for tests)."""

    name = "fake"

    def __init__(self, control: str, min_db: float = -60.0) -> None:
        self.control = control
        self.min_db = min_db
        self.gain = 1.0
        self.db = 0.0
        self.history: list[float] = []
        self.closed = False

    def set_db(self, db: float) -> float:
        if self.closed:
            raise DeviceUnavailable(f"fake mixer {self.control!r}", "closed")
        self.db = max(self.min_db, min(0.0, db)) if db != float("-inf") else float("-inf")
        self.gain = 0.0 if self.db == float("-inf") or db < self.min_db else float(10 ** (self.db / 20))
        self.history.append(self.db)
        return self.db

    def apply(self, pcm: bytes) -> bytes:
        gain = self.gain
        if gain == 1.0:
            return pcm
        scaled = np.frombuffer(pcm, "<i2").astype(np.float32) * gain
        return np.clip(np.round(scaled), -32768, 32767).astype("<i2").tobytes()

    def close(self) -> None:
        self.closed = True


class FakeAudioBackend(AudioBackend):
    """The fake audio pair (mic + speaker) sharing one optional room. Controls for tests included.

    Thread-safety: the mic is read by the capture thread and the speaker written by the playback
    thread; the shared parts (room, injected audio, history) are guarded by a lock, and the
    speaker log by a condition variable that tests wait on (`wait_speaker`, `wait_speaker_ops`).

    `keep_history` (tests) keeps what the speaker played (`played`) and the log of its writes and
    drops (`speaker_history`); a service built from settings keeps neither in memory (it runs for
    days; `playback_file` is its recording).
    """

    name = "fake"

    def __init__(
        self,
        capture_file: str | Path | None = None,
        playback_file: str | Path | None = None,
        clock_factory: ClockFactory = RealClock,
        room: FakeRoom | None = None,
        keep_history: bool = True,
        capture_start: Literal["open", "call"] = "open",
        record_max_silence: float | None = None,
    ) -> None:
        self.capture_file = capture_file
        # "open": the mic plays its file once from when it opens; "call": from each call's start
        # (`call_started`), silent before: a laptop session where pressing call gets an answer.
        self.capture_start = capture_start
        self._play_at_open = capture_start == "open"
        self.record_max_silence = record_max_silence   # WavRecorder.max_silence_seconds
        self.playback_file = playback_file
        self.clock_factory = clock_factory
        self.room = room
        self.capture_plug = _Plug("fake:capture")
        self.playback_plug = _Plug("fake:playback")
        self._lock = threading.Lock()
        self._source: np.ndarray | None = None   # the mic WAV at the capture rate, int16
        self._source_rate = 0
        self._source_pos = 0
        self._injected: deque[np.ndarray] = deque()
        self._recorder: WavRecorder | None = None
        self._record_rate = 0
        self.keep_history = keep_history
        self.played = bytearray()  # everything the speaker played, at `played_rate`
        self.played_rate = 0
        self.capture_opened = threading.Event()
        self.mic_exhausted = threading.Event()  # the capture WAV has been played to its end
        self._speaker_log: deque[SpeakerOp] = deque(maxlen=SPEAKER_LOG_OPS)
        self._speaker_ops = 0    # ops ever logged: the `seq` of the next one
        self._speaker_changed = threading.Condition()
        self.mixer: FakeVolumeControl | None = None  # made by volume_control()

    @classmethod
    def from_settings(cls, settings: FakeAudioSettings) -> FakeAudioBackend:
        """The fake pair the `fake_*` settings describe (`hw.registry`): the mic WAV, the speaker
        recording, real-time or unpaced pacing, and a room when an echo gain or impulse response is
        set (or ambient noise: `FakeRoom.from_settings`). No history in memory (`keep_history=False`)."""
        room = FakeRoom.from_settings(settings, ROOM_MIC_RATE)
        start: Literal["open", "call"] = "call" if settings.fake_capture_start == "call" else "open"
        return cls(capture_file=settings.fake_capture_file, playback_file=settings.fake_playback_file,
                   clock_factory=RealClock if settings.fake_realtime else UnpacedClock, room=room,
                   keep_history=False, capture_start=start,
                   record_max_silence=settings.fake_playback_max_silence_seconds or None)

    # -- controls for tests -------------------------------------------------------------------
    def inject(self, pcm: bytes) -> None:
        """Add PCM16 audio (at the capture rate) to the mic signal, from the next period on."""
        with self._lock:
            self._injected.append(np.frombuffer(pcm, dtype="<i2").astype(np.float64))

    @property
    def speaker_ops(self) -> int:
        """How many writes and drops the speakers have logged so far (any thread)."""
        with self._speaker_changed:
            return self._speaker_ops

    def speaker_history(self, since: int = 0) -> list[SpeakerOp]:
        """The logged writes and drops with `seq >= since`, oldest first (empty without history).

        Raises LookupError when some of them were already forgotten (the log keeps the last
        `SPEAKER_LOG_OPS`), so an assertion never runs on a silently shortened history.
        """
        with self._speaker_changed:
            ops = [op for op in self._speaker_log if op.seq >= since]
            first = ops[0].seq if ops else self._speaker_ops
            if self.keep_history and first > since:
                raise LookupError(f"speaker ops {since}..{first - 1} were forgotten "
                                  f"(the log keeps the last {SPEAKER_LOG_OPS})")
            return ops

    def wait_speaker_ops(self, count: int, timeout: float) -> bool:
        """Wait until `count` writes and drops have been logged in all; False after `timeout` s."""
        with self._speaker_changed:
            return self._speaker_changed.wait_for(lambda: self._speaker_ops >= count, timeout)

    def wait_speaker(self, predicate: Callable[[SpeakerOp], bool], timeout: float,
                     since: int = 0) -> SpeakerOp | None:
        """The first logged op with `seq >= since` for which `predicate` holds, waiting up to
        `timeout` s for it; None on timeout. Each op is looked at once, in order; LookupError if
        ops not yet looked at were forgotten meanwhile (as `speaker_history`)."""
        checked = since   # the seq of the next op to look at
        found: list[SpeakerOp] = []

        def seen() -> bool:
            nonlocal checked
            new: list[SpeakerOp] = []
            for op in reversed(self._speaker_log):   # only the ops logged since the last look
                if op.seq < checked:
                    break
                new.append(op)
            if new and new[-1].seq > checked:
                raise LookupError(f"speaker ops {checked}..{new[-1].seq - 1} were forgotten "
                                  f"(the log keeps the last {SPEAKER_LOG_OPS})")
            for op in reversed(new):
                checked = op.seq + 1
                if predicate(op):
                    found.append(op)
                    return True
            return False

        with self._speaker_changed:
            self._speaker_changed.wait_for(seen, timeout)
        return found[0] if found else None

    # -- factories ------------------------------------------------------------------------------
    def capture(self, sample_rate: int, period_frames: int) -> AudioCapture:
        return FakeCapture(self, sample_rate, period_frames)

    def playback(self, sample_rate: int, period_frames: int, buffer_periods: int = 4) -> AudioPlayback:
        return FakePlayback(self, sample_rate, period_frames, buffer_periods)

    def volume_control(self, control: str, device: str = "default") -> VolumeControl:
        self.mixer = FakeVolumeControl(control)
        return self.mixer

    # -- used by the fake devices ---------------------------------------------------------------
    def note_capture_open(self, capture: FakeCapture) -> None:
        with self._lock:
            rate = capture.format.sample_rate
            if self._source is None or self._source_rate != rate:
                pcm = read_wav_mono16(self.capture_file, rate) if self.capture_file else b""
                self._source = np.frombuffer(pcm, dtype="<i2")
                self._source_rate = rate
                self._source_pos = 0 if self._play_at_open else len(self._source)
                if not len(self._source):
                    self.mic_exhausted.set()
        self.capture_opened.set()

    def call_started(self) -> None:
        """With `capture_start="call"`, the mic file plays (again) from its start now."""
        if self.capture_start != "call":
            return
        with self._lock:
            self._play_at_open = True   # a mic not open yet starts with the file
            self._source_pos = 0
            self.mic_exhausted.clear()

    def _take_source(self, frames: int) -> np.ndarray:
        """The next at most `frames` samples of the mic WAV (int16), advancing the position (lock held)."""
        src = self._source
        if src is None:
            return np.zeros(0, dtype="<i2")
        taken = src[self._source_pos:self._source_pos + frames]
        if len(taken):
            self._source_pos += len(taken)
            if self._source_pos >= len(src):
                self.mic_exhausted.set()
        return taken

    def next_mic_pcm(self, frames: int) -> bytes | None:
        """The next `frames` of the mic WAV as PCM16 when nothing is injected, else None.

        The fast path of `FakeCapture.read` without a room (benchmarks run the pipeline unpaced
        through it): the same samples `next_mic_samples` gives, without the float round trip.
        """
        with self._lock:
            if self._injected:
                return None
            pcm = self._take_source(frames).tobytes()
        return pcm + bytes(frames * 2 - len(pcm)) if len(pcm) < frames * 2 else pcm

    def next_mic_samples(self, frames: int, rate: int) -> np.ndarray:
        with self._lock:
            out = np.zeros(frames)
            taken = self._take_source(frames)
            out[:len(taken)] = taken
            filled = 0
            while filled < frames and self._injected:
                head = self._injected[0]
                take = min(frames - filled, len(head))
                out[filled:filled + take] += head[:take]
                if take == len(head):
                    self._injected.popleft()
                else:
                    self._injected[0] = head[take:]
                filled += take
            return out

    def note_speaker_op(self, kind: Literal["write", "drop"], rate: int, pcm: bytes = b"",
                        discarded_frames: int = 0) -> None:
        """Log one speaker write or drop (the playback thread) and wake the tests waiting on it."""
        if not self.keep_history:
            return
        with self._speaker_changed:
            self._speaker_log.append(SpeakerOp(self._speaker_ops, kind, rate, pcm, discarded_frames))
            self._speaker_ops += 1
            self._speaker_changed.notify_all()

    def speaker_queued(self, pcm: bytes, rate: int) -> None:
        if self.room is not None:
            self.room.speaker_played(self.mixer.apply(pcm) if self.mixer is not None else pcm, rate)

    def record_played(self, pcm: bytes, rate: int) -> None:
        if not pcm:
            return
        if self.mixer is not None:
            pcm = self.mixer.apply(pcm)
        with self._lock:
            if self.playback_file and (self._recorder is None or self._record_rate != rate):
                if self._recorder is not None:
                    log.warning("fake speaker rate changed %d -> %d Hz; restarting %s",
                                self._record_rate, rate, self.playback_file)
                    self._recorder.close()
                self._recorder = WavRecorder(self.playback_file, rate, self.record_max_silence)
                self._record_rate = rate
            if self._recorder is not None:
                self._recorder.write(pcm)
            if self.keep_history:
                if self.played_rate != rate:
                    self.played.clear()
                    self.played_rate = rate
                self.played.extend(pcm)

    def close(self) -> None:
        """Finish the playback recording. Idempotent."""
        with self._lock:
            if self._recorder is not None:
                if self._recorder.skipped_bytes:
                    log.info("fake speaker: %.0f s of silence left out of %s (fake_playback_max_silence_seconds)",
                             self._recorder.skipped_seconds, self.playback_file)
                self._recorder.close()
                self._recorder = None
