"""The stages around AEC3 that move the echo edge, in one object the capture chain calls twice:

    speaker pcm -> [drift compensation] -> AEC3 reference           (`reference`, playback thread)
                          '-> band powers -> ReferenceSpectra
    mic frame -> AEC3 -> [residual echo suppression] -> NS/AGC -> [adaptive half-duplex gate]
                              '-> the half-duplex's measurement     (`process`, then `gate`:
                                                                     capture thread)
The gate comes after the noise suppressor so that the suppressor always hears the room as it is:
gated frames ahead of it made it take the background for silence, and the noise came back
unsuppressed each time the gate opened (measured: the baseline room's echo reduction fell from
41 to 33 dB with the gate ahead of NS).

Each stage is its own module (`drift`, `residual_echo`, `duplex`) and is switched by
`EchoControlSettings` (from the service settings); docs/echo-edge.md says what each one bought in
the room matrix and why the defaults are what they are.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import numpy as np

from device.audio.drift import DriftCompensator
from device.audio.duplex import AdaptiveDuplex, DuplexMode
from device.audio.formats import FRAME_MS, SAMPLE_DTYPE, samples_for
from device.audio.residual_echo import ReferenceSpectra, ResidualEchoSuppressor
from device.audio.residual_gate import ResidualEchoGate

log = logging.getLogger(__name__)

_PCM16_MAX: Final = 32767


@dataclass(frozen=True)
class EchoControlSettings:
    """Which stages run (an immutable value; any thread). `drift_ppm` as `doctor --audio` prints it."""

    drift_ppm: float = 0.0
    residual_echo: bool = False   # measured not to pay for itself at default settings (docs/echo-edge.md)
    adaptive_half_duplex: bool = True    # on by default since it measures its room (docs/echo-edge.md)
    measure_only: bool = False    # the half-duplex decides but never gates (the doctor's run)

    @property
    def any(self) -> bool:
        return self.drift_ppm != 0.0 or self.residual_echo or self.adaptive_half_duplex or self.measure_only


def _mean_square(x: np.ndarray) -> float:
    """A frame's power (PCM16 units squared), as every stage here measures it."""
    return float(np.dot(x, x)) / len(x)


def _to_pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -_PCM16_MAX - 1, _PCM16_MAX).astype(SAMPLE_DTYPE).tobytes()


class EchoControl:
    """Drift compensation, residual echo suppression and adaptive half-duplex around one AEC3.

    `reference` on the playback thread (it returns what the canceller gets instead of `pcm`);
    `process` on the capture thread; `mode` and `stats` from any thread (plain reads).
    """

    def __init__(self, settings: EchoControlSettings) -> None:
        self.settings = settings
        self._drift = DriftCompensator(settings.drift_ppm) if settings.drift_ppm else None
        self._spectra = ReferenceSpectra()
        self._suppressor = ResidualEchoSuppressor() if settings.residual_echo else None
        # The duplex decision needs the echo estimate; without the suppressor it still measures.
        gating = settings.adaptive_half_duplex and not settings.measure_only
        self._duplex = AdaptiveDuplex(enabled=gating)
        self._residual_gate = ResidualEchoGate(enabled=gating)   # after NS, where the half-duplex cannot see
        self._rate = 0
        self._frame = 0
        self._pending = np.zeros(0)
        self._announced: DuplexMode = "full"
        self._attenuating = False   # the residual echo gate's state, as last logged
        self._gain = 1.0   # the half-duplex's gain for the frame `process` measured, applied by `gate`

    # -- playback thread ----------------------------------------------------------------------
    def reference(self, pcm: bytes, rate: int) -> bytes:
        samples = np.frombuffer(pcm, dtype=SAMPLE_DTYPE).astype(np.float64)
        if rate != self._rate:
            self._rate, self._frame = rate, samples_for(rate, FRAME_MS)
            self._pending = np.zeros(0)
            if self._drift is not None:
                self._drift.reset()
        if self._drift is not None:
            samples = self._drift.process(samples)
            pcm = _to_pcm16(samples)
        pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        whole = len(pending) - len(pending) % self._frame
        for start in range(0, whole, self._frame):
            frame = pending[start:start + self._frame]
            if self._suppressor is not None:
                self._spectra.push(frame, rate)
            else:   # the half-duplex needs only the level: no spectrum
                self._spectra.push_level(_mean_square(frame))
        self._pending = pending[whole:]
        return pcm

    # -- capture thread -----------------------------------------------------------------------
    def process(self, mic: bytes, frame: bytes) -> bytes:
        """The 10 ms mic frame and AEC3's output for it in, the frame for NS/AGC out (the
        half-duplex measures it and decides the gain that `gate` applies after NS/AGC)."""
        raw = np.frombuffer(mic, dtype=SAMPLE_DTYPE).astype(np.float64)
        x = np.frombuffer(frame, dtype=SAMPLE_DTYPE).astype(np.float64)
        powers, far_power = self._spectra.take()
        echo = 0.0
        if self._suppressor is not None:
            x = self._suppressor.process(x, powers)
            echo = self._suppressor.last_echo_mean_square
        gain = self._duplex.gain(_mean_square(x), far_power, echo, _mean_square(raw))
        if self._duplex.mode != self._announced:
            self._announced = self._duplex.mode
            residual = self._duplex.residual_echo_db
            erle = self._duplex.echo_reduction_db
            log.info("echo: %s duplex (echo reduced %.1f dB, %.1f dB left over the background while the agent "
                     "talks)%s", self._announced, erle if erle is not None else float("nan"),
                     residual if residual is not None else float("nan"),
                     "" if self._duplex.enabled else "; not gating (adaptive_half_duplex off, or measuring)")
        self._gain = gain
        if self._suppressor is None:
            return frame   # untouched: no conversion back
        return _to_pcm16(x)

    def gate(self, frame: bytes) -> bytes:
        """The frame after NS/AGC, turned down where the half-duplex gates the one `process` saw,
        or by the residual echo gate where the echo left after NS calls for it."""
        x = np.frombuffer(frame, dtype=SAMPLE_DTYPE).astype(np.float64)
        d = self._duplex
        gain = min(self._gain, self._residual_gate.gain(_mean_square(x), d.frame_echo_in, d.far_active, d.talking))
        attenuating = self.residual_attenuation_db > 0.0
        if attenuating != self._attenuating:
            self._attenuating = attenuating
            after = self._residual_gate.echo_reduction_db
            log.info("echo: the uplink is turned down %.1f dB while the agent talks alone (%s)",
                     self.residual_attenuation_db,
                     "the canceller's first seconds" if after is None else
                     f"echo reduced {after:.1f} dB after noise suppression")
        if gain == 1.0:
            return frame
        return _to_pcm16(x * gain)

    # -- any thread ---------------------------------------------------------------------------
    @property
    def mode(self) -> DuplexMode:
        """"half" while the uplink is gated during agent speech (adaptive half-duplex), else "full"."""
        return self._duplex.mode if self._duplex.enabled else "full"

    @property
    def residual_echo_db(self) -> float | None:
        """The measured residual echo over the background while the agent talks (None until known)."""
        return self._duplex.residual_echo_db

    @property
    def echo_reduction_db(self) -> float | None:
        """The measured echo reduction while the agent talks: its echo at the mic over what AEC3
        left of it, backgrounds out (None until known)."""
        return self._duplex.echo_reduction_db

    @property
    def residual_attenuation_db(self) -> float:
        """How far the residual echo gate turns the uplink down while the agent talks (0: not at all)."""
        return self._residual_gate.attenuation_db if self._residual_gate.enabled else 0.0

    @property
    def echo_reduction_after_ns_db(self) -> float | None:
        """The echo reduction measured on the noise suppressor's output (None until known)."""
        return self._residual_gate.echo_reduction_db

    @property
    def decided_mode(self) -> DuplexMode:
        """What the adaptive half-duplex's latest measurement calls for, gating or not (the doctor
        runs it with gating off, to measure the cancellation alone, and reports this)."""
        return self._duplex.steady_mode

    def stats(self) -> dict[str, int]:
        d, s = self._duplex, self._suppressor
        return {
            "duplex_half": int(self.mode == "half"),
            "duplex_switches": d.switches,
            "duplex_gated_frames": d.gated_frames,
            "double_talk_frames": d.double_talk_frames,
            "residual_suppressed_frames": s.suppressed_frames if s is not None else 0,
            "residual_gated_frames": self._residual_gate.attenuated_frames,
            "drift_compensated_ppm": round(self._drift.ppm) if self._drift is not None else 0,
        }
