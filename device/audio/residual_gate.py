"""Residual echo attenuation after noise suppression, in full duplex.

In reverberant and far-field rooms AEC3's linear filter (~50 ms long) cannot model the tail,
and what it leaves sits just under the room's noise at the mic: the adaptive half-duplex, which
measures ahead of the noise suppressor, reads the echo as cancelled there (>= 40 dB) and stays in
full duplex, rightly for a person who wants to talk over the agent. The noise suppressor then takes
the stationary noise away and not the reverberant, speech-shaped residual, which stands out
again in the uplink: the room matrix scored 28-34 dB of echo reduction after NS in such rooms
(docs/echo.md) against a 35 dB target.

This stage measures the echo reduction where the uplink is, on the noise suppressor's output: the
echo's power at the mic (background out, the same frames the half-duplex measures: the agent
active, AEC3 converged, no double talk, the mic `STRONG_ECHO_DB` over its background) over what
is left of it after NS, less the output's own background. That background is taken from the
frames where the agent is silent (and its tail has passed) once there are any; until then from
all frames, which in a continuous reverberant echo reads high and so errs towards doing nothing.
Where the reduction falls short of `TARGET_DB`, the frames the agent is active in and no person
talks over it are turned down by the shortfall, at most `MAX_ATTENUATION_DB`: the classic
non-linear processor of a speakerphone, only as deep as this room needs. A person talking over
the agent (the half-duplex's double-talk detector, held 300 ms) is never turned down, so the cell
stays full duplex; in half duplex the half-duplex's deeper gate applies instead.

For the first `INITIAL_FRAMES` of the agent's speech the gate is at its deepest (and reports so
before any call): AEC3 starts from nothing, and over the
first seconds of the agent's first words in a new room it leaks most (measured in the matrix's
2 m room: 16-21 dB of echo reduction in the first second, ~30 in the second, ~80 once converged).
That lasts at most `INITIAL_FRAMES` of the agent's speech; a room whose echo never stands out of
the mic's background, so that nothing is measured, is then left alone. The capture DSP lives as
long as the service, so this costs only the first call's first seconds.

Pure arithmetic on frame powers, capture thread only; `attenuation_db` is read by any thread.
"""
from __future__ import annotations

from collections import deque
from typing import Final

from device.audio.duplex import (
    CONVERGE_FRAMES,
    MEDIAN_EVERY,
    MIN_ECHO_FRAMES,
    MIN_FRAMES,
    NOISE_FLOOR,
    WINDOW_FRAMES,
    Background,
    reduction_db,
)

TARGET_DB: Final = 38.0            # issue 15's 35 dB, with a margin for the estimate's spread
MAX_ATTENUATION_DB: Final = 15.0   # deeper is the half-duplex's job (it has its own rule)
ON_DB: Final = 2.0                 # a shortfall this large turns the gate on...
OFF_DB: Final = 0.5                # ...and one under this turns it off again
INITIAL_FRAMES: Final = CONVERGE_FRAMES + MIN_FRAMES   # the deepest cut until measured: 2.5 s of agent speech


def attenuation_for(reduction_db: float) -> float:
    """How far the gate turns the uplink down for an echo reduction measured after NS (dB, the
    rule without its hysteresis: what `doctor --audio` reports)."""
    return min(max(TARGET_DB - reduction_db, 0.0), MAX_ATTENUATION_DB)


class ResidualEchoGate:
    """Turns the uplink down while the agent talks by what the echo reduction after NS lacks.

    `gain(power, echo_in, far_active, talking)` once per frame, after NS, on the capture thread:
    `power` the mean square of NS's output, `echo_in` the echo power at the mic for a frame the
    half-duplex measured (None for the others), `far_active` the agent (or its tail) playing,
    `talking` a person talking over it. Returns the gain for the frame (1.0: untouched).
    `enabled=False` measures but never attenuates.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.attenuated_frames = 0
        self.attenuation_db = MAX_ATTENUATION_DB   # until measured (AEC3 converging)
        self.echo_reduction_db: float | None = None   # measured after NS (None until known)
        self._quiet = Background()    # NS output while the agent is silent
        self._all = Background()      # ...and on every frame: the fallback until there is silence
        self._quiet_frames = 0
        self._echo_in: deque[float] = deque(maxlen=WINDOW_FRAMES)
        self._echo_out: deque[float] = deque(maxlen=WINDOW_FRAMES)
        self._measured = 0
        self._far_frames = 0
        self._gain = 10 ** (-MAX_ATTENUATION_DB / 20)

    def gain(self, power: float, echo_in: float | None, far_active: bool, talking: bool) -> float:
        if power >= NOISE_FLOOR:   # NS puts out digital silence as it starts: no background to learn
            self._all.update(power)
        if not far_active:
            if power >= NOISE_FLOOR:
                self._quiet.update(power)
                self._quiet_frames += 1
            return 1.0
        self._far_frames += 1
        if echo_in is not None:
            floor = self._quiet.level if self._quiet_frames >= MIN_ECHO_FRAMES else self._all.level
            self._echo_in.append(echo_in)
            self._echo_out.append(max(power - floor, 0.0))
            self._measured += 1
            if self._measured % MEDIAN_EVERY == 0 and len(self._echo_in) >= MIN_ECHO_FRAMES:
                self.echo_reduction_db = reduction_db(sum(self._echo_in), sum(self._echo_out))
        if self._far_frames >= INITIAL_FRAMES and (self._far_frames % MEDIAN_EVERY == 0
                                                   or self._far_frames == INITIAL_FRAMES):
            # After the canceller's first seconds: as deep as the measurement says (0 without one).
            reduction = self.echo_reduction_db
            shortfall = 0.0 if reduction is None else attenuation_for(reduction)
            # Hysteresis: on above ON_DB of shortfall, off under OFF_DB (no flapping at the edge).
            self._set(shortfall if shortfall > (OFF_DB if self.attenuation_db else ON_DB) else 0.0)
        if talking or self._gain == 1.0 or not self.enabled:
            return 1.0
        self.attenuated_frames += 1
        return self._gain

    def _set(self, attenuation_db: float) -> None:
        self.attenuation_db = attenuation_db
        self._gain = 10 ** (-attenuation_db / 20)
