"""Adaptive half-duplex: when the echo left after cancellation is audible, gate the uplink while
the agent talks, unless a person talks over it (double talk).

The decision is made at run time from what the canceller actually achieves in this room, not
from a setting: while the far end plays (the reference was active within the last `TAIL_FRAMES`,
so the reverberant tail counts), the echo left in the output is compared with the background
noise of the output (measured while the far end is silent). Its median over the last
`WINDOW_FRAMES` such frames (a person talking now and then is a minority there) is the *residual
echo return*: more than `HALF_ON_DB` over the noise and the mode becomes "half"; below
`HALF_OFF_DB` it goes back to "full" (hysteresis, so a borderline room does not flap).

In "half" mode, each frame while the far end is active is turned down by `GATE_DB` unless the
double-talk detector sees a near-end talker: the output louder than `DOUBLE_TALK_DB` over what
the residual echo estimate (`ResidualEchoSuppressor.last_echo_power`) and the noise explain, held
for `HOLD_FRAMES` after it last did. So a person who speaks up while the agent talks is still
heard (and the agent can be interrupted); the agent's own voice is not.

Pure arithmetic on frame powers, one object per capture DSP, capture thread only. The mode is
read by any thread (`mode`, a str swap) for status and events.
"""
from __future__ import annotations

from collections import deque
from typing import Final, Literal

import numpy as np

DuplexMode = Literal["full", "half"]

TAIL_FRAMES: Final = 60              # far end "active" until 600 ms after its last loud frame
FAR_ACTIVE_POWER: Final = 10 ** (-60 / 10) * 32768.0 ** 2   # -60 dBFS mean square, PCM16 units
WINDOW_FRAMES: Final = 300           # 3 s of far-end activity per decision
MIN_FRAMES: Final = 150              # measured far-end frames before any decision
HALF_ON_DB: Final = 10.0             # residual echo this far over the noise: the agent would hear itself
HALF_OFF_DB: Final = 5.0
DOUBLE_TALK_DB: Final = 10.0         # a talker this much over the echo estimate is let through
HOLD_FRAMES: Final = 30              # ...and for 300 ms after
GATE_DB: Final = -40.0
NOISE_RISE: Final = 1.01             # the noise tracker creeps up ~4 dB a second, drops at once
_EPS: Final = 1e-9


class AdaptiveDuplex:
    """Decides full or half duplex from the measured residual echo and gates frames in half mode.

    `process(frame, far_power, echo_estimate)` on the capture thread: `frame` is the output of
    echo cancellation and residual echo control (float, PCM16 units), `far_power` the mean square
    of the reference in the same period, `echo_estimate` the residual echo power expected in it
    (0 without an estimator). Returns the frame, gated or not. `enabled=False` measures and
    reports but never gates (the `adaptive_half_duplex = false` setting).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.mode: DuplexMode = "full"
        self.switches = 0
        self.gated_frames = 0
        self.double_talk_frames = 0
        self._since_far = TAIL_FRAMES + 1
        self._noise = np.inf
        self._excess: deque[float] = deque(maxlen=WINDOW_FRAMES)
        self._hold = 0
        self._gate = float(10 ** (GATE_DB / 20))

    @property
    def residual_echo_db(self) -> float | None:
        """Median residual echo over the output noise during far-end activity (None until measured)."""
        if len(self._excess) < MIN_FRAMES:
            return None
        return float(np.median(self._excess))

    def process(self, frame: np.ndarray, far_power: float, echo_estimate: float = 0.0) -> np.ndarray:
        power = float(np.mean(frame * frame))
        self._since_far = 0 if far_power > FAR_ACTIVE_POWER else self._since_far + 1
        far_active = self._since_far <= TAIL_FRAMES
        if not far_active:
            self._noise = power if power < self._noise else self._noise * NOISE_RISE
            self._hold = 0
            return frame
        noise = max(self._noise if np.isfinite(self._noise) else power, _EPS)
        talking = power > 10 ** (DOUBLE_TALK_DB / 10) * (echo_estimate + noise)
        if talking:
            self._hold = HOLD_FRAMES
            self.double_talk_frames += 1
        elif self._hold:
            self._hold -= 1
        else:
            self._excess.append(10 * float(np.log10(max(power, _EPS) / noise)))
            self._decide()
        if self.mode == "half" and self.enabled and not self._hold:
            self.gated_frames += 1
            return frame * self._gate
        return frame

    def _decide(self) -> None:
        residual = self.residual_echo_db
        if residual is None:
            return
        if self.mode == "full" and residual > HALF_ON_DB:
            self.mode = "half"
            self.switches += 1
        elif self.mode == "half" and residual < HALF_OFF_DB:
            self.mode = "full"
            self.switches += 1
