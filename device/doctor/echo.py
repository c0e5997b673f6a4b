"""The echo test of `doctor --audio`: test chirps through the speaker, recorded back through the mic.

What it measures (all from one recording, numpy only, correlation by FFT):
- **echo delay**: how long after a sample is handed to the speaker (the moment the playback thread
  also hands it to the echo canceller as reference) it shows up in the mic stream. It is measured
  between stream positions: sample `p` of everything written to the speaker (the prefill silence
  included) against sample `c` of everything read from the mic, both counted from their open. So it
  is the acoustic path plus the sound card's output queue and input buffering: exactly the delay
  the canceller has to find (AEC3 copes with up to ~500 ms). On the fake devices the room takes
  samples when they are written, so the figure is the room's bulk delay.
- **echo level**: echo power at the mic over the power of the chirp that was played, in dB (the
  echo path gain; -20 dB means the mic hears the speaker 20 dB down), background noise removed.
- **clock drift**: the delay of a second chirp `spacing_seconds` later minus the first one, in
  parts per million. Two cards on separate crystals drift (tens of ppm); one card does not.
- **echo reduction**: the recording run through our own canceller (`make_capture_dsp("webrtc")`
  with the service's echo control stages: drift compensation and residual echo suppression as
  set), reference first and mic frame after, in loop order, as the audio threads do; echo power
  in over out on the second chirp (the first one lets the canceller converge). What the service
  would do is the adaptive half-duplex's rule applied to that figure (half duplex under
  `device.audio.duplex.ERLE_ON_DB`, unless what is left hides under the background): the rule
  the service applies to the same quantity measured over a call, here on the converged chirp,
  where a few seconds of recording would otherwise be mostly the canceller's convergence.
- **echo path shape** (device/doctor/echo_path.py): the impulse response deconvolved from chirp
  A, its reverberation decay time, direct-to-reverberant ratio and the speaker's harmonic
  distortion.

The speaker is written and the mic read in ONE thread, one period each, alternately: the speaker
queue then stays constant (the prefill), so the two streams keep a fixed relation and the fake
room's delay line (consumed at the mic's pace) never runs dry.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from device.audio.dsp import CaptureChain, make_capture_dsp
from device.audio.duplex import ERLE_ON_DB
from device.audio.echo_control import EchoControlSettings
from device.audio.formats import BYTES_PER_SAMPLE, DSP_RATE, FRAME_BYTES, samples_for
from device.audio.playback import PREFILL_PERIODS  # the same prefill as the playback thread: the same queue
from device.audio.residual_gate import attenuation_for
from device.doctor.echo_path import analyse_path
from device.doctor.meter import FULL_SCALE, SILENCE_DBFS, to_dbfs
from hw.audio import AudioBackend

log = logging.getLogger(__name__)

DETECTION_DB: Final = 24.0           # correlation peak over its median: an echo was heard
# (noise alone reaches ~16 dB: the largest of ~10^4 lags of a Rayleigh-like spread over its median)
SEARCH_BEFORE_S: Final = 0.05        # also look this far before the write time (a skewed card)
NOISE_MARGIN: Final = 0.5            # echo power must exceed half the noise power to be measured by power


@dataclass(frozen=True)
class ChirpPlan:
    """The test signal (an immutable value), in seconds from the first test sample:

        lead | up-chirp A | wait | down-chirp train | wait | up-chirp B | tail

    A gives the delay and level; B, `spacing` later, the drift; the train keeps every frequency
    busy so that the canceller has converged on all of them when B plays (on two lone chirps it
    has not: a chirp visits each frequency once, mostly before the canceller found the delay).
    Each wait is `max_delay_seconds`, so no other echo falls in the window searched for A or B.
    """

    chirp_seconds: float = 0.5
    low_hz: float = 300.0
    high_hz: float = 6000.0           # below the 8 kHz limit of the 16 kHz mic stream
    peak_dbfs: float = -12.0          # loud enough to hear, far from clipping a small speaker
    lead_seconds: float = 0.5         # background noise is measured here
    train_chirps: int = 4             # down-chirps back to back between A and B
    max_delay_seconds: float = 0.6    # echoes later than this are not searched for

    @property
    def starts(self) -> tuple[float, float]:
        """Start times of chirps A and B."""
        a = self.lead_seconds
        return a, self.train_start + self.train_chirps * self.chirp_seconds + self.max_delay_seconds

    @property
    def train_start(self) -> float:
        return self.lead_seconds + self.chirp_seconds + self.max_delay_seconds

    @property
    def total_seconds(self) -> float:
        return self.starts[1] + self.chirp_seconds + self.max_delay_seconds + 0.1


def chirp(rate: int, plan: ChirpPlan) -> np.ndarray:
    """An exponential up-sweep in PCM16 units with 10 ms raised-cosine fades (no clicks).

    Defined in continuous time, so the 16 kHz template matches what a 24 or 48 kHz speaker plays.
    """
    n = round(plan.chirp_seconds * rate)
    t = np.arange(n) / rate
    k = math.log(plan.high_hz / plan.low_hz)
    phase = 2 * np.pi * plan.low_hz * plan.chirp_seconds / k * (np.exp(t / plan.chirp_seconds * k) - 1)
    x = np.sin(phase)
    fade = int(0.01 * rate)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    x[:fade] *= ramp
    x[n - fade:] *= ramp[::-1]
    return x * FULL_SCALE * 10 ** (plan.peak_dbfs / 20)


def sweep_signal(rate: int, plan: ChirpPlan) -> np.ndarray:
    """The whole test signal at `rate` (PCM16 units)."""
    out = np.zeros(round(plan.total_seconds * rate))
    up = chirp(rate, plan)
    down = up[::-1]   # a down-sweep barely correlates with the up-sweep template
    for start in plan.starts:
        i = round(start * rate)
        out[i:i + len(up)] = up
    for k in range(plan.train_chirps):
        i = round((plan.train_start + k * plan.chirp_seconds) * rate)
        out[i:i + len(down)] = down
    return out


@dataclass
class EchoRecording:
    """What one echo test wrote and read, at the devices' rates (built on the calling thread)."""

    played: bytes          # every byte written to the speaker, prefill included
    play_rate: int
    captured: bytes        # every byte read from the mic
    capture_rate: int
    prefill_seconds: float
    play_chunk_bytes: int
    capture_chunk_bytes: int


def record_echo(
    backend: AudioBackend,
    play_rate: int,
    plan: ChirpPlan,
    period_ms: int = 10,
    buffer_periods: int = 4,
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> EchoRecording:
    """Play the test signal and record the mic, one speaker period then one mic period per loop.

    Runs on the calling thread; takes `plan.total_seconds` of real time on real (or paced) devices.
    Raises `DeviceUnavailable` when a device cannot be opened or fails.
    """
    play_frames = samples_for(play_rate, period_ms)
    cap_frames = samples_for(DSP_RATE, period_ms)
    signal = np.clip(np.round(sweep_signal(play_rate, plan)), -32768, 32767).astype("<i2")
    loops = math.ceil(len(signal) / play_frames)
    signal = np.concatenate([signal, np.zeros(loops * play_frames - len(signal), dtype="<i2")])
    played = bytearray()
    captured = bytearray()
    silence = bytes(play_frames * BYTES_PER_SAMPLE)
    with backend.playback(play_rate, play_frames, buffer_periods) as speaker, \
            backend.capture(DSP_RATE, cap_frames) as mic:
        for _ in range(PREFILL_PERIODS):
            speaker.write(silence)
            played += silence
        for i in range(loops):
            chunk = signal[i * play_frames:(i + 1) * play_frames].tobytes()
            speaker.write(chunk)
            played += chunk
            captured += mic.read()
            if i % 10 == 0:
                on_progress(i / loops)
        speaker.drop()   # the test is over: nothing left to play out
    on_progress(1.0)
    return EchoRecording(bytes(played), play_rate, bytes(captured), DSP_RATE,
                         PREFILL_PERIODS * play_frames / play_rate, play_frames * BYTES_PER_SAMPLE,
                         cap_frames * BYTES_PER_SAMPLE)


@dataclass(frozen=True)
class EchoMeasurement:
    """The numbers from one recording (None where no echo was found; an immutable value)."""

    found: bool
    delay_ms: float | None
    level_db: float | None           # echo path gain: echo power over played power
    echo_peak_dbfs: float | None     # the loudest echo sample at the mic
    noise_dbfs: float                # background RMS before the first chirp
    drift_ppm: float | None
    erle_db: float | None            # echo reduction of our canceller on chirp B
    erle_limited: bool               # the residual echo hides under the noise: erle_db is a floor
    detection_db: float              # correlation peak over its median (found: >= DETECTION_DB)
    clipped: int                     # mic samples at a rail during the test
    decay_ms: float | None = None    # reverberation time (RT60) of the measured impulse response
    direct_to_reverb_db: float | None = None
    distortion_db: float | None = None   # the speaker's harmonics over the linear echo
    duplex: str = "full"             # what the adaptive half-duplex decided on this recording
    residual_echo_db: float | None = None   # echo left after our canceller, over the background
    erle_after_ns_db: float | None = None   # echo reduction after the noise suppressor too (chirp B)
    erle_after_ns_limited: bool = False
    residual_attenuation_db: float = 0.0    # what the residual echo gate after NS would take off

    def to_json(self) -> dict[str, Any]:
        return {k: (round(float(v), 2) if isinstance(v, (float, np.floating)) else v)
                for k, v in asdict(self).items()}


def _correlate(segment: np.ndarray, template: np.ndarray, lags: int) -> np.ndarray:
    """corr[l] = sum(segment[l + n] * template[n]) for l in [0, lags), by FFT."""
    size = 1 << (len(segment) + len(template)).bit_length()
    spectrum = np.fft.rfft(segment, size) * np.conj(np.fft.rfft(template, size))
    return np.fft.irfft(spectrum, size)[:lags]


def _peak(corr: np.ndarray) -> tuple[float, float]:
    """Sub-sample position and magnitude of the largest |corr| (parabolic interpolation)."""
    mag = np.abs(corr)
    i = int(np.argmax(mag))
    frac = 0.0
    if 0 < i < len(mag) - 1:
        a, b, c = mag[i - 1], mag[i], mag[i + 1]
        denom = a - 2 * b + c
        frac = float(0.5 * (a - c) / denom) if denom else 0.0
    return i + frac, float(mag[i])


def _find_echo(rec: np.ndarray, template: np.ndarray, start: float, plan: ChirpPlan,
               rate: int) -> tuple[float, float, float]:
    """(delay in seconds, correlation peak over median, direct-path gain) of the chirp written at
    `start` seconds. The gain is the matched filter's: peak / template energy."""
    first = max(0, round((start - SEARCH_BEFORE_S) * rate))
    lags = int((plan.max_delay_seconds + SEARCH_BEFORE_S) * rate)
    segment = rec[first:first + lags + len(template)]
    if len(segment) < len(template) + 1:
        return 0.0, 0.0, 0.0
    corr = _correlate(segment, template, min(lags, len(segment) - len(template) + 1))
    position, height = _peak(corr)
    median = float(np.median(np.abs(corr))) or 1e-12
    return (first + position) / rate - start, height / median, height / float(np.sum(np.square(template)))


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x))) if len(x) else 0.0


@dataclass(frozen=True)
class CancellerRun:
    """The mic stream after our canceller and what its echo control decided (an immutable value)."""

    out: np.ndarray
    residual_echo_db: float | None


def run_canceller(recording: EchoRecording, echo: EchoControlSettings | None = None,
                  noise_suppression: int = 0) -> CancellerRun:
    """The mic stream after our canceller (AEC3 and the echo control stages `echo` sets, then
    the noise suppressor at `noise_suppression`, 0: none; no AGC), fed in the loop's order; the
    adaptive half-duplex and the residual echo gate measure but never gate here.

    For each loop: the speaker chunk as reference, then the mic chunk in 10 ms frames. The prefill
    goes in first, as the playback thread writes it before the capture thread's first frame.
    """
    echo = echo or EchoControlSettings()
    dsp = make_capture_dsp("webrtc", noise_suppression, 0, echo=EchoControlSettings(
        drift_ppm=echo.drift_ppm, residual_echo=echo.residual_echo, measure_only=True))
    try:
        ref_chunk, cap_chunk = recording.play_chunk_bytes, recording.capture_chunk_bytes
        prefill = round(recording.prefill_seconds * recording.play_rate) * BYTES_PER_SAMPLE
        dsp.reference(recording.played[:prefill], recording.play_rate)
        out = bytearray()
        played, captured = recording.played[prefill:], recording.captured
        for i in range(len(captured) // cap_chunk):
            dsp.reference(played[i * ref_chunk:(i + 1) * ref_chunk], recording.play_rate)
            chunk = captured[i * cap_chunk:(i + 1) * cap_chunk]
            for j in range(0, len(chunk) - FRAME_BYTES + 1, FRAME_BYTES):
                out += dsp.process(chunk[j:j + FRAME_BYTES])
        control = dsp.echo_control if isinstance(dsp, CaptureChain) else None
        return CancellerRun(np.frombuffer(bytes(out), dtype="<i2").astype(np.float64),
                            control.residual_echo_db if control is not None else None)
    finally:
        dsp.close()


def _duplex_for(erle: float | None, limited: bool) -> str:
    """The adaptive half-duplex's rule (device/audio/duplex.py) on the doctor's echo reduction."""
    return "half" if erle is not None and not limited and erle < ERLE_ON_DB else "full"


def _erle(rec: np.ndarray, out: np.ndarray, window: slice, noise: slice) -> tuple[float | None, bool]:
    """Echo power in over residual echo out on `window`, background noise taken off both sides.

    Returns (dB, limited): limited when the residual is lost in the noise, so the figure is only
    what the noise lets us see (the canceller may do better); None when the echo itself does not
    stand out of the background (nothing to measure).
    """
    noise_in = _power(rec[noise])
    echo_in = _power(rec[window]) - noise_in
    if echo_in <= max(NOISE_MARGIN * noise_in, 1e-6):
        return None, True
    noise_out = _power(out[noise])
    residual = _power(out[window]) - noise_out
    floor = max(0.1 * noise_out, 1e-3)   # below a tenth of the noise nothing can be told apart
    limited = residual < floor
    return 10 * math.log10(echo_in / max(residual, floor)), limited


def analyse(recording: EchoRecording, plan: ChirpPlan, cancel: bool = True,
            stages: EchoControlSettings | None = None, noise_suppression: int = 0) -> EchoMeasurement:
    """Measure delay, level, drift, the path's shape and (with `cancel`) our canceller's echo
    reduction with the echo control stages `stages` sets (None: their defaults); with
    `noise_suppression` (the service's level, 0: none) also the reduction after the noise
    suppressor, and what the residual echo gate after it would take off (device/audio/residual_gate.py)."""
    rate = recording.capture_rate
    rec = np.frombuffer(recording.captured, dtype="<i2").astype(np.float64)
    template = chirp(rate, plan)
    starts = [recording.prefill_seconds + s for s in plan.starts]
    # The lead, minus its first 50 ms (a card's start-up transient) and the last 50 ms.
    noise = slice(int(0.05 * rate), max(int(0.05 * rate) + 1, int((starts[0] - 0.05) * rate)))
    noise_power = _power(rec[noise])
    clipped = int(np.count_nonzero((rec >= 32767) | (rec <= -32768)))
    found = [_find_echo(rec, template, s, plan, rate) for s in starts]
    detection_db = 20 * math.log10(max(min(ratio for _, ratio, _ in found), 1e-12))
    noise_dbfs = to_dbfs(math.sqrt(noise_power))
    if detection_db < DETECTION_DB:
        return EchoMeasurement(False, None, None, None, noise_dbfs, None, None, False, detection_db, clipped)
    delay = found[0][0]
    windows = [slice(round((s + d) * rate), round((s + d) * rate) + len(template))
               for s, (d, _, _) in zip(starts, found)]
    echo = rec[windows[0]]
    excess = _power(echo) - noise_power
    if excess > max(NOISE_MARGIN * noise_power, 1e-6):
        level_db = 10 * math.log10(excess / _power(template))   # all of the echo, reverb included
    else:
        # The echo hides in the background (or someone talked during the lead): only the matched
        # filter still sees it, and its gain is the direct path's.
        level_db = 20 * math.log10(max(abs(found[0][2]), 1e-6))
    drift_ppm = (found[1][0] - found[0][0]) / (starts[1] - starts[0]) * 1e6
    shape = analyse_path(rec, template, round(starts[0] * rate), noise, rate, (plan.low_hz, plan.high_hz),
                         plan.max_delay_seconds)
    erle: float | None = None
    limited = False
    run = None
    erle_ns: float | None = None
    limited_ns = False
    attenuation = 0.0
    if cancel:
        run = run_canceller(recording, stages)
        out = run.out
        # A little past the window: the canceller's own latency and the room's reverb tail.
        b = windows[1]
        scored = slice(b.start, min(b.stop + int(0.05 * rate), len(out)))
        erle, limited = _erle(rec, out, scored, noise)
        if noise_suppression:   # the same recording again, through the noise suppressor too
            after = run_canceller(recording, stages, noise_suppression).out
            erle_ns, limited_ns = _erle(rec, after, scored, noise)
            # Only where the residual stands out of NS's output does the gate act (`limited`: it does not).
            attenuation = attenuation_for(erle_ns) if erle_ns is not None and not limited_ns else 0.0
    return EchoMeasurement(
        found=True, delay_ms=delay * 1000, level_db=level_db,
        echo_peak_dbfs=to_dbfs(float(np.max(np.abs(echo)))) if len(echo) else SILENCE_DBFS,
        noise_dbfs=noise_dbfs, drift_ppm=drift_ppm, erle_db=erle, erle_limited=limited,
        detection_db=detection_db, clipped=clipped, decay_ms=shape.decay_ms,
        direct_to_reverb_db=shape.direct_to_reverb_db, distortion_db=shape.distortion_db,
        duplex=_duplex_for(erle, limited),
        residual_echo_db=run.residual_echo_db if run is not None else None,
        erle_after_ns_db=erle_ns, erle_after_ns_limited=limited_ns, residual_attenuation_db=attenuation)
