"""The audio pipeline: the capture thread (mic -> DSP -> resample -> uplink) and the playback
thread (jitter buffer -> speaker, the render clock that feeds the echo canceller its reference).

Devices come from an `hw.audio.AudioBackend`, so ALSA and the fakes slot in alike. A device that
is missing or vanishes is reopened with backoff by the thread that owns it; the thread reports
`HardwareLost`/`HardwareBack` once per outage and the call goes on.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from device.audio.buffers import JitterBuffer, LatencyWindow, UplinkChunk, UplinkQueue
from device.audio.dsp import CaptureDsp
from device.audio.formats import DSP_RATE, FRAME_BYTES
from device.audio.resampler import Resampler
from device.core.events import Event, HardwareBack, HardwareLost
from device.core.threads import OwnedThread
from hw.audio import AudioBackend, AudioCapture, AudioPlayback
from hw.clock import Clock, RealClock
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)

UPLINK_CHUNK_MS: Final = 20
PREFILL_PERIODS: Final = 2
REOPEN_INITIAL: Final = 0.5
REOPEN_MAX: Final = 5.0


@dataclass
class PipelineCounters:
    """Audio counters (each written by one thread, read by any)."""

    frames_captured: int = 0     # 10 ms mic frames read from the device
    frames_gated: int = 0        # 10 ms frames not sent because the mic gate was closed
    chunks_queued: int = 0       # 20 ms chunks put on the uplink queue
    periods_played: int = 0
    agent_periods_played: int = 0
    silence_periods: int = 0
    flushes: int = 0
    reference_errors: int = 0
    capture_reopens: int = 0     # successful opens (the first included)
    playback_reopens: int = 0


def _with_reopen(thread: OwnedThread, what: str, on_event: Callable[[Event], None],
                 open_device: Callable[[], None], lost: bool = False) -> bool:
    """Open a device, retrying with backoff until it works or the thread stops.

    Reports `HardwareLost` once when the first attempt fails (unless the caller already did:
    `lost=True`) and `HardwareBack` when it works again.
    """
    delay = REOPEN_INITIAL
    while not thread.stopping.is_set():
        thread.beat()  # waiting for a device is not being stuck
        try:
            open_device()
        except DeviceUnavailable as exc:
            if not lost:
                log.error("%s device unavailable (%s); retrying every %.1f-%.0f s",
                          what, exc.reason, REOPEN_INITIAL, REOPEN_MAX)
                on_event(HardwareLost(what, exc.reason))
                lost = True
            thread.stopping.wait(delay)
            delay = min(delay * 2, REOPEN_MAX)
            continue
        if lost:
            log.info("%s device is back", what)
            on_event(HardwareBack(what))
        return True
    return False


class CaptureThread(OwnedThread):
    """Reads the mic, runs the DSP per 10 ms frame, resamples and queues 20 ms uplink chunks.

    Runs the DSP even while the mic gate is closed, so the echo canceller keeps adapting.
    """

    def __init__(self, pipeline: AudioPipeline) -> None:
        super().__init__("audio-capture")
        self.p = pipeline
        self.device: AudioCapture | None = None

    def _open(self) -> None:
        p = self.p
        device = p.backend.capture(DSP_RATE, DSP_RATE * p.period_ms // 1000)
        try:
            fmt = device.open()
        except BaseException:
            device.close()
            raise
        log.info("capture open: %d Hz, period %d frames", fmt.sample_rate, fmt.period_frames)
        self.device = device
        p.counters.capture_reopens += 1

    def _close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            device.close()

    def run(self) -> None:
        p = self.p
        rate = p.session_rate
        resampler = Resampler(DSP_RATE, rate)
        chunk_bytes = rate * UPLINK_CHUNK_MS // 1000 * 2
        carry = bytearray()
        try:
            while not self.stopping.is_set():
                if self.device is None:
                    carry.clear()
                    if not _with_reopen(self, "capture", p.on_event, self._open):
                        return
                assert self.device is not None
                self.beat()
                try:
                    pcm = self.device.read()
                except DeviceUnavailable as exc:
                    log.error("capture device lost: %s", exc.reason)
                    p.on_event(HardwareLost("capture", exc.reason))
                    self._close()
                    if not _with_reopen(self, "capture", p.on_event, self._open, lost=True):
                        return
                    continue
                read_at = p.clock.monotonic()
                if p.session_rate != rate:  # renegotiated: rebuild the resampler
                    rate = p.session_rate
                    resampler = Resampler(DSP_RATE, rate)
                    chunk_bytes = rate * UPLINK_CHUNK_MS // 1000 * 2
                gate = p.mic_gate
                # ALSA may grant a period that is not a whole 10 ms (e.g. 341 frames): the DSP
                # takes exactly 10 ms, so carry the remainder over to the next read.
                if carry:
                    pcm = bytes(carry) + pcm
                    carry.clear()
                whole = len(pcm) - len(pcm) % FRAME_BYTES
                if whole < len(pcm):
                    carry += pcm[whole:]
                for offset in range(0, whole, FRAME_BYTES):
                    frame = p.dsp.process(pcm[offset:offset + FRAME_BYTES])
                    p.counters.frames_captured += 1
                    if p.monitor is not None:
                        p.monitor(frame)
                    if not gate:
                        p.counters.frames_gated += 1
                        continue
                    resampler.push(frame)
                if not gate:
                    resampler.reset()
                    continue
                while (chunk := resampler.pop(chunk_bytes)) is not None:
                    if not p.mic_gate:  # closed while we processed: nothing leaves
                        break
                    p.uplink.put(UplinkChunk(chunk, read_at, rate=rate))
                    p.counters.chunks_queued += 1
        finally:
            self._close()


class PlaybackThread(OwnedThread):
    """The render clock: writes one period per loop (silence when nothing is queued) and hands
    exactly what it wrote to the echo canceller as the reference, at the moment it writes it.

    Queue depth: the device buffer holds `buffer_periods` (3 by default) and `write` blocks until a
    period of it is free, so the speaker always has two periods queued when the thread is on time
    (2 to 3: 20-30 ms of output latency at 10 ms periods), silence when idle. After an open or an
    interruption's drop, `PREFILL_PERIODS` of silence go in first.
    """

    def __init__(self, pipeline: AudioPipeline) -> None:
        super().__init__("audio-playback")
        self.p = pipeline
        self.device: AudioPlayback | None = None
        self.rate = pipeline.session_rate
        self.period_bytes = 0

    def _open(self) -> None:
        p = self.p
        self.rate = p.session_rate
        device = p.backend.playback(self.rate, self.rate * p.period_ms // 1000, p.buffer_periods)
        try:
            fmt = device.open()
        except BaseException:
            device.close()
            raise
        log.info("playback open: %d Hz, period %d frames, buffer %d frames",
                 fmt.sample_rate, fmt.period_frames, fmt.buffer_frames)
        # Write the period we asked for (a whole 10 ms multiple, as the echo canceller's reference
        # needs); the driver's own period (fmt) may differ and the backend re-chunks.
        self.period_bytes = self.rate * p.period_ms // 1000 * 2
        self.device = device
        p.counters.playback_reopens += 1
        self._write_silence(PREFILL_PERIODS)

    def _close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            device.close()

    def _write(self, pcm: bytes) -> None:
        assert self.device is not None
        self.device.write(pcm)
        try:
            self.p.dsp.reference(pcm, self.rate)
        except ValueError as exc:  # a rate the canceller refuses: play on, without echo reference
            self.p.counters.reference_errors += 1
            if self.p.counters.reference_errors == 1:
                log.error("echo reference refused (%s); echo cancellation is degraded", exc)
        self.p.counters.periods_played += 1
        self.p.played_event.set()

    def _write_silence(self, periods: int) -> None:
        silence = bytes(self.period_bytes)
        for _ in range(periods):
            self._write(silence)

    def _next_period(self) -> bytes:
        p = self.p
        agent = p.jitter.pop(self.period_bytes)
        local = p.take_local(self.period_bytes)
        if agent is not None:
            p.counters.agent_periods_played += 1
            p.last_agent_write = p.clock.monotonic()
        if local is None:
            if agent is None:
                p.counters.silence_periods += 1
                return bytes(self.period_bytes)
            return agent
        if agent is None:
            return local
        mixed = np.frombuffer(agent, "<i2").astype(np.int32) + np.frombuffer(local, "<i2")
        return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()

    def run(self) -> None:
        p = self.p
        try:
            while not self.stopping.is_set():
                if self.device is None or p.session_rate != self.rate:
                    if self.device is not None:
                        self.device.drop()
                        self._close()
                    if not _with_reopen(self, "playback", p.on_event, self._open):
                        return
                self.beat()
                try:
                    if p.flush_requested.is_set():
                        p.flush_requested.clear()
                        assert self.device is not None
                        self.device.drop()
                        p.counters.flushes += 1
                        p.flush_latency.add(p.clock.monotonic() - p.flush_requested_at)
                        p.flushed_event.set()
                        self._write_silence(PREFILL_PERIODS)
                    self._write(self._next_period())
                except DeviceUnavailable as exc:
                    log.error("playback device lost: %s", exc.reason)
                    p.on_event(HardwareLost("playback", exc.reason))
                    self._close()
                    if not _with_reopen(self, "playback", p.on_event, self._open, lost=True):
                        return
        finally:
            if self.device is not None:
                try:
                    self.device.drop()
                except DeviceUnavailable:
                    pass
            self._close()


class AudioPipeline:
    """Owns the capture and playback threads and the state they share with the rest.

    Gates and the session rate are plain attributes written by the main thread (a single
    reference assignment is atomic in CPython); buffers are thread-safe.
    """

    def __init__(
        self,
        backend: AudioBackend,
        dsp: CaptureDsp,
        uplink: UplinkQueue,
        jitter: JitterBuffer,
        on_event: Callable[[Event], None],
        session_rate: int = 16000,
        period_ms: int = 10,
        buffer_periods: int = 3,
        clock: Clock | None = None,
        jitter_seconds: float | None = None,
    ) -> None:
        self.backend = backend
        self.dsp = dsp
        self.uplink = uplink
        self.jitter = jitter
        # The jitter bound is set in seconds; in bytes it follows the session rate.
        self.jitter_seconds = jitter_seconds if jitter_seconds is not None else jitter.max_bytes / (session_rate * 2)
        self.on_event = on_event
        self.session_rate = session_rate
        self.period_ms = period_ms
        self.buffer_periods = buffer_periods
        self.clock = clock or RealClock()
        self.counters = PipelineCounters()
        self.mic_gate = False
        self.flush_requested = threading.Event()
        self.flush_requested_at = 0.0
        self.flush_latency = LatencyWindow(1000)  # interruption -> device buffer dropped
        self.flushed_event = threading.Event()
        self.played_event = threading.Event()
        self.last_agent_write = 0.0
        self.monitor: Callable[[bytes], None] | None = None
        self._local = bytearray()
        self._local_lock = threading.Lock()
        self.capture = CaptureThread(self)
        self.playback = PlaybackThread(self)

    # -- main thread --------------------------------------------------------------------------
    def start(self) -> None:
        self.playback.start()
        self.capture.start()

    def stop(self) -> None:
        self.capture.stop()
        self.playback.stop()

    def join(self, timeout: float = 3.0) -> bool:
        a = self.capture.join(timeout)
        b = self.playback.join(timeout)
        return a and b

    @property
    def alive(self) -> bool:
        return self.capture.alive and self.playback.alive

    def healthy(self, now: float, stale_after: float) -> bool:
        """Both audio threads alive and making progress (what the systemd watchdog vouches for)."""
        return self.alive and all(now - t.heartbeat < stale_after for t in (self.capture, self.playback))

    def set_mic_gate(self, open_: bool, discard_queued: bool = True) -> None:
        """Open or close the mic gate. On close, `discard_queued` also drops what is queued and
        not yet sent (mute: a privacy promise); a push-to-talk release keeps it, since it was
        spoken while the button was held and its commit follows it through the same queue."""
        self.mic_gate = open_
        if not open_ and discard_queued:
            self.uplink.clear()

    def set_session_rate(self, rate: int) -> None:
        """Called on the connection thread as `session.created` arrives, before any new audio."""
        if rate != self.session_rate:
            log.info("session rate %d Hz (was %d): reconfiguring", rate, self.session_rate)
            self.jitter.clear()  # audio at the old rate
            self.jitter.set_limit(int(self.jitter_seconds * rate * 2))
            with self._local_lock:
                self._local.clear()
            self.session_rate = rate

    def flush(self) -> None:
        """Barge-in: clear queued agent audio now; the playback thread drops the device buffer."""
        self.jitter.clear()
        self.flush_requested_at = self.clock.monotonic()
        self.flush_requested.set()

    def play_local(self, pcm: bytes) -> None:
        """Queue a local sound (an earcon) at the session rate, mixed over agent audio."""
        with self._local_lock:
            if len(self._local) < self.session_rate * 2 * 5:  # at most 5 s of earcons queued
                self._local += pcm

    # -- playback thread ----------------------------------------------------------------------
    def take_local(self, nbytes: int) -> bytes | None:
        if not self._local:
            return None
        with self._local_lock:
            out = bytes(self._local[:nbytes])
            del self._local[:nbytes]
        return out + bytes(nbytes - len(out)) if len(out) < nbytes else out
