"""The capture DSP chain: echo cancellation, noise suppression and gain, in 10 ms frames at 16 kHz.

    mic frame -> WebRTC AEC3 + high-pass (livekit APM) -> echo control -> webrtc-noise-gain NS/AGC -> gate -> out
                      ^                (residual echo suppression, the half-duplex's measurement)   (half-duplex)
    speaker pcm ------'  (`reference`: exactly what the speaker was given, at its own rate, kept on
                          the mic's clock by the echo control's drift compensation)

The echo control stages are in device/audio/echo_control.py (one call on each side).

The capture thread calls `CaptureDsp.process` once per 10 ms mic frame; the playback thread calls
`CaptureDsp.reference` with every buffer it writes to the speaker, at the moment it writes it, so
each reference frame reaches the canceller before the mic frame that holds its echo.

Both native libraries take exactly 10 ms per call, and livekit's APM *aborts the process* (a Rust
panic) on anything else, so every size is checked here before any library call and a bad size
raises `ValueError` instead.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

# Bytes in one 10 ms reference frame at a rate, refusing the rates the canceller does not take.
from device.audio.apm import frame_bytes as reference_frame_bytes
from device.audio.formats import BYTES_PER_SAMPLE, DSP_RATE, FRAME_BYTES

if TYPE_CHECKING:
    from device.audio.apm import EchoCanceller
    from device.audio.echo_control import EchoControl, EchoControlSettings
    from device.diagnostics.recorder import DebugRecorder

log = logging.getLogger(__name__)

MAX_AUTO_GAIN_DBFS: Final = 31
MAX_NOISE_SUPPRESSION: Final = 4

AecMode = Literal["webrtc", "off"]


class CaptureDsp(Protocol):
    """The capture DSP as the audio threads see it.

    `process` is called by the capture thread only; `reference` by the playback thread only; the
    two may run at the same time. `stats`, `last_is_speech` and `close` may be used from any thread
    (close after the capture thread stopped calling `process`).
    """

    last_is_speech: bool

    @property
    def duplex_mode(self) -> str:
        """"full", or "half" while the adaptive half-duplex gates the agent's echo (any thread)."""
        ...

    @property
    def residual_echo_db(self) -> float | None:
        """Echo left after cancellation over the background while the agent talks (measured)."""
        ...

    @property
    def residual_attenuation_db(self) -> float:
        """How far the uplink is turned down while the agent talks alone, in full duplex, where the
        echo left after noise suppression calls for it (0: not at all; device/audio/residual_gate.py)."""
        ...

    def process(self, frame: bytes) -> bytes:
        """One 10 ms mic frame (16 kHz mono PCM16, `FRAME_BYTES`) in, the processed frame out."""
        ...

    def reference(self, pcm: bytes, sample_rate: int) -> None:
        """Exactly what the speaker was given (PCM16 mono at `sample_rate`), when it was given."""
        ...

    def stats(self) -> dict[str, int]:
        """A snapshot of the counters."""
        ...

    def close(self) -> None:
        """Release the native processors. Idempotent."""
        ...


class CaptureChain:
    """The `CaptureDsp` implementation: optional AEC, then optional NS/AGC, else a checked passthrough.

    Threads: `process` on the capture thread, `reference` on the playback thread (concurrently);
    each path has its own lock (the library serialises its own native calls with a mutex), so the
    playback thread never waits for a capture frame's noise suppression. Build it with
    `make_capture_dsp`.
    """

    def __init__(self, apm: EchoCanceller | None, noise: Any | None, recorder: DebugRecorder | None = None,
                 echo: EchoControl | None = None) -> None:
        self._apm = apm          # device.audio.apm.EchoCanceller or None (aec off)
        self._echo = echo if apm is not None else None   # the stages around AEC3 (aec on only)
        self._noise = noise      # webrtc_noise_gain.AudioProcessor or None (NS and AGC off)
        self._recorder = recorder
        self._capture_lock = threading.Lock()
        self._reference_lock = threading.Lock()
        self._ref_fifo = bytearray()   # partial reference frame waiting for the rest
        self._ref_rate = 0
        self._closed = False
        self.last_is_speech = False
        self.frames_processed = 0
        self.speech_frames = 0
        self.reference_frames = 0
        self.reference_rate_changes = 0
        self.rejected_frames = 0       # wrong sizes/rates refused with ValueError

    # -- capture thread ---------------------------------------------------------------------------
    def process(self, frame: bytes) -> bytes:
        if len(frame) != FRAME_BYTES:
            self.rejected_frames += 1
            raise ValueError(f"capture DSP takes exactly {FRAME_BYTES} bytes (10 ms of 16 kHz mono PCM16) "
                             f"per frame, got {len(frame)} bytes")
        if type(frame) is not bytes:
            frame = bytes(frame)   # webrtc-noise-gain takes `bytes` only
        if self._recorder is not None:
            self._recorder.raw(frame, DSP_RATE)
        with self._capture_lock:
            if self._closed:
                raise RuntimeError("capture DSP used after close()")
            out = frame
            if self._apm is not None:
                out = self._apm.process(frame)
                if self._echo is not None:
                    out = self._echo.process(frame, out)
            if self._noise is not None:
                result = self._noise.Process10ms(out)
                out = result.audio
                self.last_is_speech = bool(result.is_speech)
                self.speech_frames += self.last_is_speech
            if self._echo is not None:
                out = self._echo.gate(out)
            self.frames_processed += 1
        if self._recorder is not None:
            self._recorder.processed(out, DSP_RATE)
        return out

    # -- playback thread --------------------------------------------------------------------------
    def reference(self, pcm: bytes, sample_rate: int) -> None:
        try:
            frame_bytes = reference_frame_bytes(sample_rate)
            if len(pcm) % BYTES_PER_SAMPLE:
                raise ValueError(f"echo reference must be whole PCM16 samples, got {len(pcm)} bytes")
        except ValueError:
            self.rejected_frames += 1
            raise
        if self._recorder is not None:
            self._recorder.reference(pcm, sample_rate)
        if self._apm is None:
            return
        with self._reference_lock:
            if self._closed:
                return   # the playback thread may outlive the capture DSP by a frame at shutdown
            if sample_rate != self._ref_rate:
                if self._ref_rate:
                    self.reference_rate_changes += 1
                    log.info("echo reference rate %d -> %d Hz (dropping %d partial bytes)",
                             self._ref_rate, sample_rate, len(self._ref_fifo))
                self._ref_fifo.clear()
                self._ref_rate = sample_rate
            if self._echo is not None:
                pcm = self._echo.reference(pcm, sample_rate)   # drift-compensated, same rate
            fifo = self._ref_fifo
            if not fifo and len(pcm) % frame_bytes == 0:
                data: bytes | bytearray = pcm   # the usual case: whole periods, no copy into the FIFO
            else:
                fifo += pcm
                data = fifo
            whole = len(data) - len(data) % frame_bytes
            done = 0
            try:
                with memoryview(data) as view:   # released before the FIFO is resized below
                    while done < whole:
                        # The canceller copies the frame into its own buffer (the caller's is not ours).
                        self._apm.reverse(view[done:done + frame_bytes], sample_rate)
                        done += frame_bytes
                        self.reference_frames += 1
            finally:
                if data is fifo:
                    del fifo[:done]   # what was handed over, even if the library raised midway

    # -- any thread -------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        # Plain int reads: a snapshot may be one frame out of step between counters, never torn.
        return {
            "frames_processed": self.frames_processed,
            "speech_frames": self.speech_frames,
            "reference_frames": self.reference_frames,
            "reference_rate": self._ref_rate,
            "reference_pending_bytes": len(self._ref_fifo),
            "reference_rate_changes": self.reference_rate_changes,
            "rejected_frames": self.rejected_frames,
            **(self._echo.stats() if self._echo is not None else {}),
        }

    @property
    def echo_control(self) -> EchoControl | None:
        return self._echo

    @property
    def duplex_mode(self) -> str:
        return self._echo.mode if self._echo is not None else "full"

    @property
    def residual_echo_db(self) -> float | None:
        """Residual echo over the background while the agent talks, as the echo control measured it."""
        return self._echo.residual_echo_db if self._echo is not None else None

    @property
    def residual_attenuation_db(self) -> float:
        return self._echo.residual_attenuation_db if self._echo is not None else 0.0

    @property
    def aec_enabled(self) -> bool:
        return self._apm is not None

    @property
    def noise_enabled(self) -> bool:
        return self._noise is not None

    def close(self) -> None:
        with self._capture_lock, self._reference_lock:
            if self._closed:
                return
            self._closed = True
            # Dropping our only reference frees the native APM (its handle is released on GC).
            self._apm = None
            self._noise = None
            self._ref_fifo.clear()
        log.debug("capture DSP closed: %s", self.stats())


def make_capture_dsp(
    aec: AecMode,
    noise_suppression: int,
    auto_gain_dbfs: int,
    recorder: DebugRecorder | None = None,
    echo: EchoControlSettings | None = None,
) -> CaptureDsp:
    """Build the capture chain from settings.

    `aec`: "webrtc" (AEC3 + high-pass filter) or "off" (a speakerphone with its own AEC).
    `noise_suppression`: 0 (off) to 4 (strongest). `auto_gain_dbfs`: 0 (off) to 31, the target level
    below full scale. With everything off the result is a passthrough that still checks sizes.
    `echo`: the stages around AEC3 (device/audio/echo_control.py); None: the defaults of
    `EchoControlSettings`. They run only with aec = "webrtc".
    """
    if aec not in ("webrtc", "off"):
        raise ValueError(f"aec must be 'webrtc' or 'off', not {aec!r}")
    if not 0 <= noise_suppression <= MAX_NOISE_SUPPRESSION:
        raise ValueError(f"noise_suppression must be 0-{MAX_NOISE_SUPPRESSION}, not {noise_suppression}")
    if not 0 <= auto_gain_dbfs <= MAX_AUTO_GAIN_DBFS:
        raise ValueError(f"auto_gain_dbfs must be 0-{MAX_AUTO_GAIN_DBFS}, not {auto_gain_dbfs}")
    apm = None
    control = None
    if aec == "webrtc":
        from device.audio.apm import make_apm
        from device.audio.echo_control import EchoControl, EchoControlSettings

        apm = make_apm()
        echo = echo if echo is not None else EchoControlSettings()
        control = EchoControl(echo) if echo.any else None
    noise = None
    if noise_suppression or auto_gain_dbfs:
        from webrtc_noise_gain import AudioProcessor

        noise = AudioProcessor(auto_gain_dbfs, noise_suppression)
    log.info("capture DSP: aec=%s (%s) %s noise_suppression=%d auto_gain_dbfs=%d recorder=%s",
             aec, apm.kind if apm is not None else "off", control.settings if control is not None else "",
             noise_suppression, auto_gain_dbfs, "on" if recorder is not None else "off")
    return CaptureChain(apm, noise, recorder, control)
