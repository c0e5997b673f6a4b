"""Adaptive half-duplex: when the echo left after cancellation is audible, gate the uplink while
the agent talks, unless a person talks over it (double talk).

The decision is made at run time from what the canceller actually achieves in this room, not
from a setting: while the far end plays (the reference was active within the last `TAIL_FRAMES`,
so the reverberant tail counts), the echo left in the output is compared with the background
noise of the output (measured while the far end is silent), and the mic's power before
cancellation with the output's (the echo reduction achieved). Their medians over the last
`WINDOW_FRAMES` such frames (a person talking now and then is a minority there) decide: less than
`ERLE_ON_DB` removed and more than `HALF_ON_DB` left over the noise, the mode becomes "half"; it
goes back to "full" above `ERLE_OFF_DB` or under `HALF_OFF_DB` (hysteresis: no flapping).

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
CONVERGE_FRAMES: Final = 100         # the canceller's first second of far-end speech is not measured
MEDIAN_EVERY: Final = 10            # the decision is refreshed every 100 ms of far-end activity
# Half duplex when the canceller removes less than ERLE_ON_DB of the echo *and* what is left stands
# HALF_ON_DB out of the background (an echo under the noise cannot be heard, however little was
# removed); back to full above ERLE_OFF_DB or under HALF_OFF_DB (hysteresis).
ERLE_ON_DB: Final = 30.0
ERLE_OFF_DB: Final = 35.0
HALF_ON_DB: Final = 6.0
HALF_OFF_DB: Final = 3.0
DOUBLE_TALK_DB: Final = 10.0         # a talker this much over the echo estimate is let through
HOLD_FRAMES: Final = 30              # ...and for 300 ms after
GATE_DB: Final = -40.0
ENVELOPE_DECAY: Final = 0.9          # per frame: -0.46 dB per 10 ms, an RT60 of ~1.3 s
NOISE_FLOOR: Final = 1.0             # -90 dBFS: the quietest background the excess is measured from
NOISE_RISE: Final = 1.01             # the noise tracker creeps up ~4 dB a second, drops at once
_EPS: Final = 1e-9


class AdaptiveDuplex:
    """Decides full or half duplex from the measured residual echo and gates frames in half mode.

    `process(frame, far_power, echo_estimate)` on the capture thread: `frame` is the output of
    echo cancellation and residual echo control (float, PCM16 units), `far_power` the mean square
    of the reference in the same period, `echo_estimate` the residual echo power expected in it
    (0 without an estimator). Returns the frame, gated or not. `enabled=False` measures and
    reports but never gates (the `adaptive_half_duplex = false` setting).

    The residual expected in a frame is the larger of `echo_estimate` and the room's measured
    *residual return* (the median, over far-end frames, of output power over the far-end
    envelope) times the far-end envelope now: so the double-talk detector follows the agent's
    loudness even where the suppressor's estimate is poor.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.mode: DuplexMode = "full"
        self.switches = 0
        self.gated_frames = 0
        self.double_talk_frames = 0
        self._since_far = TAIL_FRAMES + 1
        self._far_envelope = 0.0
        self._noise = np.inf
        self._excess: deque[float] = deque(maxlen=WINDOW_FRAMES)   # dB over the noise
        self._erle: deque[float] = deque(maxlen=WINDOW_FRAMES)     # dB, mic over output
        self._return: deque[float] = deque(maxlen=WINDOW_FRAMES)   # output over the far envelope
        self._hold = 0
        self._gate = float(10 ** (GATE_DB / 20))
        self._frames = 0
        self._far_frames = 0
        self._median_return = 0.0     # medians, refreshed every MEDIAN_EVERY frames (they cost)
        self._median_excess: float | None = None
        self._median_erle: float | None = None

    @property
    def residual_echo_db(self) -> float | None:
        """Median residual echo over the output noise during far-end activity (None until measured)."""
        return self._median_excess

    @property
    def echo_reduction_db(self) -> float | None:
        """Median echo reduction (mic over output) during far-end activity (None until measured)."""
        return self._median_erle

    @property
    def steady_mode(self) -> DuplexMode:
        """The mode the latest measurement calls for, without hysteresis (what the doctor reports)."""
        if self._median_excess is None or self._median_erle is None:
            return "full"
        return "half" if self._median_erle < ERLE_ON_DB and self._median_excess > HALF_ON_DB else "full"

    def process(self, frame: np.ndarray, far_power: float, echo_estimate: float = 0.0,
                mic_power: float | None = None) -> np.ndarray:
        """`mic_power`: the mean square of the mic frame before cancellation (None: not known, the
        decision then rests on the residual over the background alone)."""
        gain = self.gain(float(np.dot(frame, frame)) / len(frame), far_power, echo_estimate, mic_power)
        return frame if gain == 1.0 else frame * gain

    def gain(self, power: float, far_power: float, echo_estimate: float = 0.0,
             mic_power: float | None = None) -> float:
        """The same decision from the frame's mean square `power` alone: the gain to apply to it
        (1.0, or the gate's). The capture chain uses this, and skips the multiply at 1.0."""
        self._since_far = 0 if far_power > FAR_ACTIVE_POWER else self._since_far + 1
        # The far end's energy as the room keeps it: up at once, down over ~a reverberant tail.
        self._far_envelope = max(far_power, ENVELOPE_DECAY * self._far_envelope)
        if self._since_far > TAIL_FRAMES:
            if power < self._noise:
                self._noise = max(power, NOISE_FLOOR)   # digital silence is no background to measure by
            else:
                self._noise *= NOISE_RISE
            self._hold = 0
            return 1.0
        noise = max(self._noise if np.isfinite(self._noise) else power, _EPS)
        measured = self._median_excess is not None
        expected = max(echo_estimate, self._median_return * self._far_envelope)
        talking = measured and power > 10 ** (DOUBLE_TALK_DB / 10) * (expected + noise)
        if talking:
            self._hold = HOLD_FRAMES
            self.double_talk_frames += 1
        elif self._hold:
            self._hold -= 1
        elif self._far_frames < CONVERGE_FRAMES:
            self._far_frames += 1   # AEC3 still converging: its reduction says nothing of the room yet
        else:
            self._return.append(power / max(self._far_envelope, _EPS))
            self._excess.append(10 * float(np.log10(max(power, _EPS) / noise)))
            if mic_power is not None:
                self._erle.append(10 * float(np.log10(max(mic_power, _EPS) / max(power, _EPS))))
            self._frames += 1
            if self._frames % MEDIAN_EVERY == 0 and len(self._excess) >= MIN_FRAMES:
                self._median_return = float(np.median(self._return))
                self._median_excess = float(np.median(self._excess))
                self._median_erle = float(np.median(self._erle)) if self._erle else 0.0
                self._decide()
        if self.mode == "half" and self.enabled and not self._hold:
            self.gated_frames += 1
            return self._gate
        return 1.0
    def _decide(self) -> None:
        residual, erle = self._median_excess, self._median_erle
        if residual is None or erle is None:
            return
        if self.mode == "full" and erle < ERLE_ON_DB and residual > HALF_ON_DB:
            self.mode = "half"
            self.switches += 1
        elif self.mode == "half" and (erle > ERLE_OFF_DB or residual < HALF_OFF_DB):
            self.mode = "full"
            self.switches += 1
