"""The playback thread: the render clock that plays agent audio and earcons and feeds the echo
canceller exactly what the speaker was given."""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from device.audio.buffers import JitterBuffer, LatencyWindow, LocalSoundQueue
from device.audio.formats import SAMPLE_DTYPE, StreamFormat, samples_for
from device.audio.reopen import open_with_retry
from device.audio.shared import PipelineShared
from device.audio.vad import frame_dbfs
from device.audio.volume import SoftwareGain
from device.core.events import Event, HardwareLost
from device.core.threads import OwnedThread
from hw.audio import AudioBackend, AudioPlayback
from hw.clock import Clock
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)

PREFILL_PERIODS: Final = 2
FLUSH_LATENCY_SAMPLES: Final = 1000


@dataclass
class PlaybackCounters:
    """The playback thread's counters: written by it only, read by any thread (plain ints)."""

    periods_played: int = 0
    agent_periods_played: int = 0
    silence_periods: int = 0
    flushes: int = 0
    reference_errors: int = 0    # periods the echo canceller refused as reference
    playback_reopens: int = 0    # successful opens (the first included)
    playback_underruns: int = 0  # underruns of every device opened so far (see `snapshot`)


def open_playback(backend: AudioBackend, period_ms: int, buffer_periods: int,
                  fmt: StreamFormat) -> AudioPlayback:
    """A playback device from `backend`, opened at `fmt`'s rate (raises `DeviceUnavailable`)."""
    device = backend.playback(fmt.rate, samples_for(fmt.rate, period_ms), buffer_periods)
    try:
        opened = device.open()
    except BaseException:
        device.close()
        raise
    log.info("playback open: %d Hz, period %d frames, buffer %d frames",
             opened.sample_rate, opened.period_frames, opened.buffer_frames)
    return device


class PlaybackThread(OwnedThread):
    """The render clock: writes one period per loop (silence when nothing is queued) and hands
    exactly what it wrote to the echo canceller as the reference, at the moment it writes it.

    Inputs: `open_device` opens the speaker at a stream format (retried with backoff while it
    fails), `period_ms` is what one write holds, `reference` is the capture DSP's reference side,
    `jitter` holds agent audio and `local` earcons (both popped one period at a time), `shared`
    gives the flush request and the stream format (a new rate reopens the speaker), `clock` times
    the flushes, `on_event` hears of a lost or recovered device, `gain` is the speaker volume
    (applied before the write and the reference tap alike). Everything here runs on the
    playback thread, except `snapshot`, `flushed` and `flush_latency` (any thread).

    Queue depth: the device buffer holds `buffer_periods` (3 by default) and `write` blocks until a
    period of it is free, so the speaker always has two periods queued when the thread is on time
    (2 to 3: 20-30 ms of output latency at 10 ms periods), silence when idle. After an open or an
    interruption's drop, `PREFILL_PERIODS` of silence go in first.
    """

    def __init__(self, open_device: Callable[[StreamFormat], AudioPlayback], period_ms: int,
                 reference: Callable[[bytes, int], None], jitter: JitterBuffer, local: LocalSoundQueue,
                 shared: PipelineShared, clock: Clock, on_event: Callable[[Event], None],
                 gain: SoftwareGain | None = None) -> None:
        super().__init__("audio-playback")
        self._gain = gain if gain is not None else SoftwareGain()
        self._open_device = open_device
        self._period_ms = period_ms
        self._reference = reference
        self._jitter = jitter
        self._local = local
        self._shared = shared
        self._clock = clock
        self._on_event = on_event
        self.counters = PlaybackCounters()
        self.flushed = threading.Event()                  # set after each flush's device drop
        self.flush_latency = LatencyWindow(FLUSH_LATENCY_SAMPLES)  # flush request -> device dropped
        self.device: AudioPlayback | None = None          # the open speaker (read by any thread, for tests)
        self.format = shared.format                       # what `device` was opened at
        self._device_lock = threading.Lock()              # `device` against `snapshot`, not per write
        self._period_bytes = 0
        self._silence = b""

    def snapshot(self) -> PlaybackCounters:
        """The counters, with the open device's underruns added (any thread)."""
        with self._device_lock:
            device = self.device
            return dataclasses.replace(self.counters, playback_underruns=self.counters.playback_underruns
                                       + (device.underruns if device is not None else 0))

    def _open_current(self) -> AudioPlayback:
        fmt = self._shared.format   # the newest at each attempt
        device = self._open_device(fmt)
        self.format = fmt
        return device

    def _open(self, lost: bool) -> bool:
        device = open_with_retry(self, "playback", self._open_current, self._on_event, self._clock, lost)
        if device is None:
            return False
        # Write the period we asked for (a whole 10 ms multiple, as the echo canceller's reference
        # needs); the driver's own period may differ and the backend re-chunks.
        self._period_bytes = self.format.period_bytes(self._period_ms)
        self._silence = bytes(self._period_bytes)
        with self._device_lock:
            self.device = device
        self.counters.playback_reopens += 1
        self._write_silence(PREFILL_PERIODS)
        return True

    def _close(self, drop: bool = False) -> None:
        with self._device_lock:
            device, self.device = self.device, None
            if device is not None:
                self.counters.playback_underruns += device.underruns
        if device is None:
            return
        try:
            if drop:
                device.drop()   # close() may drain: drop first, so nothing plays out
        except DeviceUnavailable:
            pass
        finally:
            device.close()

    def _write(self, pcm: bytes) -> None:
        assert self.device is not None
        # The volume first: what is written and what the canceller gets as reference stay one.
        gain = self._gain
        pcm = gain.apply(pcm)
        self.device.write(pcm)
        if gain.measure:
            gain.level_dbfs = frame_dbfs(pcm)
        try:
            self._reference(pcm, self.format.rate)
        except ValueError as exc:  # a rate the canceller refuses: play on, without echo reference
            self.counters.reference_errors += 1
            if self.counters.reference_errors == 1:
                log.error("echo reference refused (%s); echo cancellation is degraded", exc)
        self.counters.periods_played += 1

    def _write_silence(self, periods: int) -> None:
        for _ in range(periods):
            self._write(self._silence)

    def _next_period(self) -> bytes:
        nbytes = self._period_bytes
        agent = self._jitter.pop(nbytes)
        local = self._local.pop(nbytes)
        if agent is not None:
            self.counters.agent_periods_played += 1
        if local is None:
            if agent is None:
                self.counters.silence_periods += 1
                return self._silence
            return agent
        if agent is None:
            return local
        mixed = np.frombuffer(agent, SAMPLE_DTYPE).astype(np.int32) + np.frombuffer(local, SAMPLE_DTYPE)
        return np.clip(mixed, -32768, 32767).astype(SAMPLE_DTYPE).tobytes()

    def run(self) -> None:
        shared = self._shared
        try:
            while not self.stopping.is_set():
                if self.device is None or shared.format.rate != self.format.rate:
                    self._close(drop=True)
                    if not self._open(lost=False):
                        return
                self.beat()
                try:
                    requested_at = shared.take_flush()
                    if requested_at is not None:
                        assert self.device is not None
                        self.device.drop()
                        self.counters.flushes += 1
                        self.flush_latency.add(self._clock.monotonic() - requested_at)
                        self.flushed.set()
                        self._write_silence(PREFILL_PERIODS)
                    self._write(self._next_period())
                except DeviceUnavailable as exc:
                    log.error("playback device lost: %s", exc.reason)
                    self._on_event(HardwareLost("playback", exc.reason))
                    self._close()
                    if not self._open(lost=True):
                        return
        finally:
            self._close(drop=True)
