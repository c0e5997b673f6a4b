"""The capture thread: mic -> capture DSP per 10 ms frame -> resample -> 20 ms uplink chunks."""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from device.audio.buffers import UplinkChunk, UplinkQueue
from device.audio.formats import DSP_RATE, FRAME_BYTES, FRAME_MS, UPLINK_CHUNK_MS, samples_for
from device.audio.preroll import Preroll
from device.audio.reopen import open_with_retry
from device.audio.resampler import Resampler
from device.audio.shared import PipelineShared
from device.core.events import Event, HardwareLost
from device.core.threads import OwnedThread
from hw.audio import AudioBackend, AudioCapture
from hw.clock import Clock
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)


@dataclass
class CaptureCounters:
    """The capture thread's counters: written by it only, read by any thread (plain ints)."""

    frames_captured: int = 0     # 10 ms mic frames read from the device
    frames_gated: int = 0        # 10 ms frames not sent because the mic gate was closed
    chunks_queued: int = 0       # 20 ms chunks put on the uplink queue
    capture_reopens: int = 0     # successful opens (the first included)
    capture_overruns: int = 0    # overruns of every device opened so far (see `snapshot`)


def open_capture(backend: AudioBackend, period_ms: int) -> AudioCapture:
    """A capture device from `backend`, opened at the DSP rate (raises `DeviceUnavailable`)."""
    device = backend.capture(DSP_RATE, samples_for(DSP_RATE, period_ms))
    try:
        fmt = device.open()
    except BaseException:
        device.close()
        raise
    log.info("capture open: %d Hz, period %d frames", fmt.sample_rate, fmt.period_frames)
    return device


def _never() -> bool:
    return False


class CaptureThread(OwnedThread):
    """Reads the mic, runs the DSP per 10 ms frame, resamples and queues 20 ms uplink chunks.

    Inputs: `open_device` opens the mic (retried with backoff while it fails), `process` is the
    capture DSP's per-frame call, `uplink` takes the chunks, `shared` gives the mic gate and the
    stream format (read once per period), `clock` stamps each chunk, `on_event` hears of a lost or
    recovered device, `preroll` holds the first words while the gate is closed and `mic_hold` set
    (or `held()`, read per frame, is true: the wake word tap latched on a detection).
    Runs the DSP even while the mic gate is closed, so the echo canceller keeps adapting. Everything here runs on the capture thread, except `snapshot` (any thread).
    """

    def __init__(self, open_device: Callable[[], AudioCapture], process: Callable[[bytes], bytes],
                 uplink: UplinkQueue, shared: PipelineShared, clock: Clock,
                 on_event: Callable[[Event], None], preroll: Preroll | None = None,
                 held: Callable[[], bool] | None = None) -> None:
        super().__init__("audio-capture")
        self._held = held if held is not None else _never
        self._preroll = preroll if preroll is not None else Preroll(0)
        self._open_device = open_device
        self._process = process
        self._uplink = uplink
        self._shared = shared
        self._clock = clock
        self._on_event = on_event
        self.counters = CaptureCounters()
        self.device: AudioCapture | None = None   # the open mic (read by any thread, for tests)
        self._device_lock = threading.Lock()      # `device` against `snapshot`, not per read

    def snapshot(self) -> CaptureCounters:
        """The counters, with the open device's overruns added (any thread)."""
        with self._device_lock:
            device = self.device
            return dataclasses.replace(self.counters, capture_overruns=self.counters.capture_overruns
                                       + (device.overruns if device is not None else 0))

    def _open(self, lost: bool) -> bool:
        device = open_with_retry(self, "capture", self._open_device, self._on_event, self._clock, lost)
        if device is None:
            return False
        with self._device_lock:
            self.device = device
        self.counters.capture_reopens += 1
        return True

    def _close(self) -> None:
        with self._device_lock:
            device, self.device = self.device, None
            if device is not None:
                self.counters.capture_overruns += device.overruns
        if device is not None:
            device.close()

    def run(self) -> None:
        shared, counters, process, uplink = self._shared, self.counters, self._process, self._uplink
        clock, preroll, tap_holds = self._clock, self._preroll, self._held
        fmt = shared.format
        resampler = Resampler(DSP_RATE, fmt.rate)
        chunk_bytes = fmt.chunk_bytes
        carry = bytearray()
        try:
            while not self.stopping.is_set():
                if self.device is None:
                    carry.clear()
                    if not self._open(lost=False):
                        return
                device = self.device
                assert device is not None
                self.beat()
                try:
                    pcm = device.read()
                except DeviceUnavailable as exc:
                    log.error("capture device lost: %s", exc.reason)
                    self._on_event(HardwareLost("capture", exc.reason))
                    self._close()
                    if not self._open(lost=True):
                        return
                    continue
                read_at = clock.monotonic()
                current = shared.format   # one reference per period: rate and generation agree
                if current is not fmt:
                    if current.rate != fmt.rate:  # renegotiated: rebuild the resampler
                        resampler = Resampler(DSP_RATE, current.rate)
                    fmt, chunk_bytes = current, current.chunk_bytes
                gate, hold = shared.mic_gate, shared.mic_hold
                generation = preroll.generation
                # ALSA may grant a period that is not a whole 10 ms (e.g. 341 frames): the DSP
                # takes exactly 10 ms, so carry the remainder over to the next read.
                if carry:
                    pcm = bytes(carry) + pcm
                    carry.clear()
                whole = len(pcm) - len(pcm) % FRAME_BYTES
                if whole < len(pcm):
                    carry += pcm[whole:]
                for offset in range(0, whole, FRAME_BYTES):
                    frame = process(pcm[offset:offset + FRAME_BYTES])
                    counters.frames_captured += 1
                    if not gate:
                        if not ((hold or tap_holds()) and preroll.push(frame, generation)):
                            counters.frames_gated += 1
                        continue
                    if len(preroll):
                        preroll.push(frame, generation)  # behind the held first words, in order
                    else:
                        resampler.push(frame)
                if not gate:
                    resampler.reset()
                    continue
                if len(preroll):
                    # The held audio first, as fast as the uplink has room (two frames a chunk).
                    room = max(0, uplink.capacity - len(uplink) - 1) * (UPLINK_CHUNK_MS // FRAME_MS)
                    for held in preroll.take(room):
                        resampler.push(held)
                while (chunk := resampler.pop(chunk_bytes)) is not None:
                    if not shared.mic_gate:  # closed while we processed: nothing leaves
                        break
                    uplink.put(UplinkChunk(chunk, read_at, generation=fmt.generation))
                    counters.chunks_queued += 1
        finally:
            self._close()
