"""The audio pipeline: the owner of the capture thread (mic -> DSP -> resample -> uplink) and the
playback thread (jitter buffer + earcons -> speaker, the render clock that feeds the echo
canceller its reference), and the control API the rest of the service uses.

Devices come from an `hw.audio.AudioBackend`, so ALSA and the fakes slot in alike. A device that
is missing or vanishes is reopened with backoff by the thread that owns it (`reopen.py`); the
thread reports `HardwareLost`/`HardwareBack` once per outage and the call goes on.

Each thread gets exactly what it uses (see `CaptureThread` and `PlaybackThread`); what the control
side changes while they run is in one `PipelineShared`, whose docstring says who writes what.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Final

from device.audio.buffers import JitterBuffer, LatencyWindow, LocalSoundQueue, UplinkQueue
from device.audio.capture import CaptureThread, open_capture
from device.audio.dsp import CaptureDsp
from device.audio.earcons import earcon_pcm
from device.audio.formats import DEFAULT_SESSION_RATE, StreamFormat, bytes_for_seconds, duration_seconds
from device.audio.playback import PlaybackThread, open_playback
from device.audio.preroll import Preroll
from device.audio.shared import PipelineShared
from device.audio.volume import SoftwareGain
from device.core.events import EarconName, Event
from hw.audio import AudioBackend
from hw.clock import Clock, RealClock

log = logging.getLogger(__name__)

LOCAL_SOUND_SECONDS: Final = 5.0   # at most this much of earcons queued


class AudioPipeline:
    """Owns the capture and playback threads, the state they share, and the control API.

    Threads: `start`/`stop`/`join`, `set_mic_gate`, `flush` and `play_earcon` on the main thread;
    `set_stream_format` on the connection thread; `counters`, `stream_format`, `healthy` from any.
    The buffers it is given are thread-safe; it hands each thread only its own inputs.
    """

    def __init__(
        self,
        backend: AudioBackend,
        dsp: CaptureDsp,
        uplink: UplinkQueue,
        jitter: JitterBuffer,
        on_event: Callable[[Event], None],
        session_rate: int = DEFAULT_SESSION_RATE,
        period_ms: int = 10,
        buffer_periods: int = 3,
        clock: Clock | None = None,
        jitter_seconds: float | None = None,
        preroll_frames: int = 0,
        on_frame: Callable[[bytes], None] | None = None,
        held: Callable[[], bool] | None = None,
    ) -> None:
        fmt = StreamFormat(session_rate)   # generation 0: until the first session.created
        self.uplink = uplink
        self.jitter = jitter
        # The jitter bound is set in seconds; in bytes it follows the session rate.
        if jitter_seconds is None:
            jitter_seconds = duration_seconds(jitter.max_bytes, session_rate)
        self.jitter_seconds = jitter_seconds
        self.local = LocalSoundQueue(fmt.rate, bytes_for_seconds(fmt.rate, LOCAL_SOUND_SECONDS))
        self._clock = clock or RealClock()
        self._shared = PipelineShared(fmt)
        self.gain = SoftwareGain()             # the speaker volume (device/service/volume.py sets it)
        self.preroll = Preroll(preroll_frames)  # the first words (device/audio/preroll.py)
        # Also hold while this says so (the wake word tap latched on a detection: wake_tap.py).
        self._held = held if held is not None else (lambda: False)
        process = dsp.process
        if on_frame is not None:  # e.g. the local voice activity detector, on the processed mic
            def process(frame: bytes, dsp_process: Callable[[bytes], bytes] = dsp.process,
                        observe: Callable[[bytes], None] = on_frame) -> bytes:
                out = dsp_process(frame)
                observe(out)
                return out
        # Factories, so that a thread that died can be replaced by one with the same inputs.
        self._make_capture = functools.partial(
            CaptureThread, functools.partial(open_capture, backend, period_ms), process, uplink,
            self._shared, self._clock, on_event, self.preroll, self._held)
        self._make_playback = functools.partial(
            PlaybackThread, functools.partial(open_playback, backend, period_ms, buffer_periods),
            period_ms, dsp.reference, jitter, self.local, self._shared, self._clock, on_event, self.gain)
        self.capture = self._make_capture()
        self.playback = self._make_playback()

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

    def set_mic_gate(self, open_: bool, discard_queued: bool = True, hold: bool = False) -> None:
        """Open or close the mic gate. On close, `discard_queued` also drops what is queued and
        not yet sent (mute: a privacy promise); a push-to-talk release keeps it, since it was
        spoken while the button was held and its commit follows it through the same queue.
        `hold` (closed gate only): keep the first words for the session being set up
        (device/audio/preroll.py); a gate closed without `hold` discards them at once, unless the
        wake word tap still holds for a detection the main thread has not handled yet."""
        self._shared.mic_hold = hold and not open_
        self._shared.mic_gate = open_
        if not open_ and not hold and not self._held():
            self.preroll.clear()
        if not open_ and discard_queued:
            self.uplink.clear()

    def flush(self) -> None:
        """Barge-in: clear queued agent audio now; the playback thread drops the device buffer."""
        self.jitter.clear()
        self._shared.request_flush(self._clock.monotonic())

    def play_earcon(self, name: EarconName) -> bool:
        """Queue an earcon, made at the current stream format's rate, mixed over agent audio.
        False (counted) when it was refused: the queue is full, or the rate changed meanwhile."""
        rate = self._shared.format.rate
        return self.play_local(earcon_pcm(name, rate), rate)

    def play_local(self, pcm: bytes, rate: int) -> bool:
        """Queue a local sound made at `rate` (any thread); see `play_earcon`."""
        return self.local.push(pcm, rate)

    # -- connection thread --------------------------------------------------------------------
    def set_stream_format(self, fmt: StreamFormat) -> None:
        """The new session's format, at `session.created`, before its first audio delta arrives.

        One reference swap: the audio threads pick it up at their next period (the playback thread
        reopens the speaker at a new rate, the capture thread resamples to it and stamps its chunks
        with the new generation). Audio queued at the old rate is dropped first."""
        old = self._shared.format
        if fmt.rate != old.rate:
            log.info("session rate %d Hz (was %d): reconfiguring", fmt.rate, old.rate)
            self.jitter.clear()  # audio at the old rate
            self.jitter.set_limit(bytes_for_seconds(fmt.rate, self.jitter_seconds))
            self.local.reset(fmt.rate, bytes_for_seconds(fmt.rate, LOCAL_SOUND_SECONDS))
        self._shared.format = fmt

    # -- any thread ---------------------------------------------------------------------------
    @property
    def stream_format(self) -> StreamFormat:
        """The current session's stream format (generation 0 before the first session)."""
        return self._shared.format

    @property
    def mic_gate(self) -> bool:
        return self._shared.mic_gate

    @property
    def flushed_event(self) -> threading.Event:
        """Set by the playback thread after each flush's device drop (clear it before a flush)."""
        return self.playback.flushed

    @property
    def flush_latency(self) -> LatencyWindow:
        """Interruption -> device buffer dropped, per flush (seconds)."""
        return self.playback.flush_latency

    def restart_capture(self) -> None:
        """Replace a capture thread that died with a new one built from the same inputs (main
        thread; the service's AudioThreadWatch decides when). Its counters carry on from the dead
        one's (it wrote them last). A live thread is left alone."""
        if not self.capture.alive:
            thread = self._make_capture()
            thread.counters = self.capture.counters
            self.capture = thread
            thread.start()

    def restart_playback(self) -> None:
        """Replace a playback thread that died with a new one (main thread), counters kept."""
        if not self.playback.alive:
            thread = self._make_playback()
            thread.counters = self.playback.counters
            self.playback = thread
            thread.start()

    @property
    def alive(self) -> bool:
        return self.capture.alive and self.playback.alive

    def healthy(self, now: float, stale_after: float) -> bool:
        """Both audio threads alive and making progress (what the systemd watchdog vouches for)."""
        return self.alive and all(now - t.heartbeat < stale_after for t in (self.capture, self.playback))

    def counters(self) -> dict[str, int]:
        """One snapshot of the audio counters: both threads' and their devices' (overruns, underruns)."""
        return {**dataclasses.asdict(self.capture.snapshot()), **dataclasses.asdict(self.playback.snapshot()),
                "local_sounds_refused": self.local.refused_sounds}
