"""Adaptive half-duplex: where the canceller cannot take enough of the agent's echo out of the
mic, gate the uplink while the agent talks, unless a person talks over it (double talk).

The decision is made at run time from what the canceller actually achieves in this room, not
from a setting: while the far end plays (the reference was active within the last `TAIL_FRAMES`,
so the reverberant tail counts), the *echo reduction* is measured as the echo's power at the mic
over what is left of it after cancellation, each less its own background (measured while the far
end is silent: the mic's, and the output's, which the canceller's high-pass and suppressor make
quieter), summed over the frames where the echo stands `STRONG_ECHO_DB` over the mic's
background, in the last `WINDOW_FRAMES` of them. Summing powers and taking the background out is
what the room matrix measures (docs/echo.md); a median of per-frame ratios is not: the quiet
frames between words, where the background is all there is on both sides, drag it to ~0 dB in a
room the canceller handles perfectly (measured: 20 dB where the matrix reads >= 44). Less than
`ERLE_ON_DB` and the mode becomes "half"; back to "full" above `ERLE_OFF_DB` (hysteresis: no
flapping). A room whose echo never stands out of its background (fewer than `MIN_ECHO_FRAMES`
such frames) stays full duplex: what the mic hardly hears, the uplink cannot carry.

Without the mic's power (`mic_power=None`) only the residual over the background is known, and
the rule is that alone: more than `HALF_ON_DB` left over the background, half; under
`HALF_OFF_DB`, full.

In "half" mode, each frame while the far end is active is turned down by `GATE_DB` unless the
double-talk detector sees a near-end talker: the output louder than `DOUBLE_TALK_DB` over what
the residual echo estimate (`ResidualEchoSuppressor.last_echo_power`) and the noise explain, on
`DOUBLE_TALK_FRAMES` frames in a row, held after it last did for as long as it was heard (at
most `HOLD_FRAMES`). So a person who speaks up while the agent talks is still heard (and the
agent can be interrupted); the agent's own voice is not.

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
# Half duplex when the canceller removes less than ERLE_ON_DB of the echo (issue 15's target: 35 dB
# where cancellation is all there is); back to full above ERLE_OFF_DB (hysteresis).
ERLE_ON_DB: Final = 35.0
ERLE_OFF_DB: Final = 40.0
ERLE_CAP_DB: Final = 60.0            # what is left under the background: "at least" this much
STRONG_ECHO_DB: Final = 3.0          # a frame whose mic stands this far over its background has echo to measure
MIN_ECHO_FRAMES: Final = 20          # ...and this many of them before the reduction decides
# Without the mic's power: half when the residual stands HALF_ON_DB over the background.
HALF_ON_DB: Final = 6.0
HALF_OFF_DB: Final = 3.0
DOUBLE_TALK_DB: Final = 10.0         # a talker this much over the echo estimate is let through
HOLD_FRAMES: Final = 30              # ...and for 300 ms after (once heard for 80 ms and more;
HOLD_MIN_FRAMES: Final = 6           # 60 ms plus 30 ms per frame heard until then)
HOLD_PER_FRAME: Final = 3
# ...once it did on this many frames in a row: a distorting, drifting echo spikes past the
# threshold for single frames (measured: a 300 ms hold opened ~25 times a greeting in the hard
# corner, 0.85-1.4 s of self-speech per 10 s); a person's syllable lasts 100 ms and more.
DOUBLE_TALK_FRAMES: Final = 2
# The residual the room returns for the agent's loudness, as the double-talk detector expects it:
# a high percentile of output over the far envelope, not the median, which a distorting, drifting
# echo exceeds often enough to pass for a person (measured in the hard corner: 0.45-1.4 s of
# self-speech per 10 s with the median, in some runs).
RETURN_PERCENTILE: Final = 90.0
GATE_DB: Final = -40.0
ENVELOPE_DECAY: Final = 0.9          # per frame: -0.46 dB per 10 ms, an RT60 of ~1.3 s
NOISE_FLOOR: Final = 1.0             # -90 dBFS: the quietest background the excess is measured from
NOISE_RISE: Final = 1.01             # the noise tracker creeps up ~4 dB a second, drops at once
BACKGROUND_ALPHA: Final = 0.2        # frame powers smoothed over ~5 frames (50 ms)...
BACKGROUND_BLOCK_FRAMES: Final = 50  # ...their minimum per 0.5 s block...
BACKGROUND_BLOCKS: Final = 6         # ...over the last 3 s...
BACKGROUND_BIAS_DB: Final = 1.5      # ...raised to the mean of a noise (a smoothed minimum sits under it)
_EPS: Final = 1e-9
# The dB thresholds as power ratios, computed once (the capture thread compares with them per frame).
_DOUBLE_TALK_RATIO: Final = 10 ** (DOUBLE_TALK_DB / 10)
_STRONG_ECHO_RATIO: Final = 10 ** (STRONG_ECHO_DB / 10)
_BACKGROUND_BIAS: Final = 10 ** (BACKGROUND_BIAS_DB / 10)
_ERLE_CAP_RATIO: Final = 10 ** (-ERLE_CAP_DB / 10)


class AdaptiveDuplex:
    """Decides full or half duplex from the measured residual echo and gates frames in half mode.

    `process(frame, far_power, echo_estimate)` on the capture thread: `frame` is the output of
    echo cancellation and residual echo control (float, PCM16 units), `far_power` the mean square
    of the reference in the same period, `echo_estimate` the residual echo power expected in it
    (0 without an estimator). Returns the frame, gated or not. `enabled=False` measures and
    reports but never gates (the `adaptive_half_duplex = false` setting).

    The residual expected in a frame is the larger of `echo_estimate` and the room's measured
    *residual return* (the `RETURN_PERCENTILE` percentile, over far-end frames, of output power
    over the far-end envelope) times the far-end envelope now: so the double-talk detector follows
    the agent's loudness even where the suppressor's estimate is poor.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.mode: DuplexMode = "full"
        self.switches = 0
        self.gated_frames = 0
        self.double_talk_frames = 0
        self._since_far = TAIL_FRAMES + 1
        self._far_envelope = 0.0
        self._noise = Background()        # the output's background
        self._mic_noise = Background()    # the mic's
        self._echo_in: deque[float] = deque(maxlen=WINDOW_FRAMES)    # echo power at the mic, background out
        self._echo_out: deque[float] = deque(maxlen=WINDOW_FRAMES)   # ...and left after cancellation
        self._excess: deque[float] = deque(maxlen=WINDOW_FRAMES)   # dB over the noise
        self._return: deque[float] = deque(maxlen=WINDOW_FRAMES)   # output over the far envelope
        self._hold = 0
        self._over = 0                    # frames in a row over the double-talk threshold
        self._gate = float(10 ** (GATE_DB / 20))
        self._frames = 0
        self._far_frames = 0
        self._high_return = 0.0       # statistics, refreshed every MEDIAN_EVERY frames (they cost)
        self._median_excess: float | None = None
        self._echo_reduction: float | None = None
        self._echo_control_measured = False   # the mic's power was given: the reduction decides
        self.frame_echo_in: float | None = None   # the last frame's echo at the mic (background out), if measured

    @property
    def far_active(self) -> bool:
        """The last frame was in the agent's speech or its tail."""
        return self._since_far <= TAIL_FRAMES

    @property
    def talking(self) -> bool:
        """The double-talk detector saw a person in the last frame, or holds for one."""
        return self._hold > 0

    @property
    def residual_echo_db(self) -> float | None:
        """Median residual echo over the output noise during far-end activity (None until measured)."""
        return self._median_excess

    @property
    def echo_reduction_db(self) -> float | None:
        """The echo reduction achieved (echo at the mic over echo left, backgrounds out, capped at
        `ERLE_CAP_DB`) during far-end activity (None until measured, or without the mic's power)."""
        return self._echo_reduction

    @property
    def steady_mode(self) -> DuplexMode:
        """The mode the latest measurement calls for, without hysteresis (what the doctor reports)."""
        if self._echo_reduction is not None:
            return "half" if self._echo_reduction < ERLE_ON_DB else "full"
        if self._median_excess is not None and not self._echo_control_measured:
            return "half" if self._median_excess > HALF_ON_DB else "full"
        return "full"

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
        self.frame_echo_in = None
        self._since_far = 0 if far_power > FAR_ACTIVE_POWER else self._since_far + 1
        # The far end's energy as the room keeps it: up at once, down over ~a reverberant tail.
        self._far_envelope = max(far_power, ENVELOPE_DECAY * self._far_envelope)
        self._noise.update(power)
        if mic_power is not None:
            self._mic_noise.update(mic_power)
        if self._since_far > TAIL_FRAMES:
            self._hold = self._over = 0
            return 1.0
        noise = max(self._noise.level if self._noise.known else power, _EPS)
        measured = self._median_excess is not None
        expected = max(echo_estimate, self._high_return * self._far_envelope)
        over = measured and power > _DOUBLE_TALK_RATIO * (expected + noise)
        self._over = self._over + 1 if over else 0
        talking = self._over >= DOUBLE_TALK_FRAMES
        if talking:
            # Held as long as the person has been heard, up to HOLD_FRAMES: a brief spike of echo
            # that passes for a person opens the gate for 120 ms, not for 300.
            self._hold = min(HOLD_FRAMES, HOLD_MIN_FRAMES + HOLD_PER_FRAME * self._over)
            self.double_talk_frames += 1
        elif self._hold:
            self._hold -= 1
        elif self._far_frames < CONVERGE_FRAMES:
            self._far_frames += 1   # AEC3 still converging: its reduction says nothing of the room yet
        else:
            self._return.append(power / max(self._far_envelope, _EPS))
            self._excess.append(10 * float(np.log10(max(power, _EPS) / noise)))
            if mic_power is not None:
                self._echo_control_measured = True
                mic_noise = self._mic_noise.level if self._mic_noise.known else 0.0
                # Every measured frame, the tail's weak ones too (what the room matrix sums): the
                # residual echo gate after NS measures on these (device/audio/residual_gate.py).
                if mic_power > _STRONG_ECHO_RATIO * mic_noise:
                    self._echo_in.append(mic_power - mic_noise)
                    self._echo_out.append(power - (noise if self._noise.known else 0.0))
                if len(self._echo_in) >= MIN_ECHO_FRAMES:   # only where the echo stands out at all
                    self.frame_echo_in = max(mic_power - mic_noise, 0.0)
            self._frames += 1
            if self._frames % MEDIAN_EVERY == 0 and len(self._excess) >= MIN_FRAMES:
                self._high_return = float(np.percentile(self._return, RETURN_PERCENTILE))
                self._median_excess = float(np.median(self._excess))
                if len(self._echo_in) >= MIN_ECHO_FRAMES:
                    self._echo_reduction = reduction_db(sum(self._echo_in), sum(self._echo_out))
                self._decide()
        if self.mode == "half" and self.enabled and not self._hold:
            self.gated_frames += 1
            return self._gate
        return 1.0

    def _decide(self) -> None:
        residual, erle = self._median_excess, self._echo_reduction
        if erle is not None:
            to_half, to_full = erle < ERLE_ON_DB, erle > ERLE_OFF_DB
        elif residual is not None and not self._echo_control_measured:
            to_half, to_full = residual > HALF_ON_DB, residual < HALF_OFF_DB
        else:
            return   # the mic is known but its echo never stood out of the background: stay as we are
        if self.mode == "full" and to_half:
            self.mode = "half"
            self.switches += 1
        elif self.mode == "half" and to_full:
            self.mode = "full"
            self.switches += 1


class Background:
    """A signal's background power by minimum statistics (Martin, 2001, simplified): the frame
    powers smoothed over ~50 ms, their minimum over the last `BACKGROUND_BLOCKS` blocks of
    `BACKGROUND_BLOCK_FRAMES` frames, raised by `BACKGROUND_BIAS_DB` (a minimum of noise sits
    under its mean). It runs on every frame, the agent talking or not: a call whose agent greets
    at once has no silence to measure in before the greeting (measured: three frames), and the
    gaps between words reach the background where the room's tail allows. Hand-written: a few
    lines per frame, and the noise suppressor's own estimate is not exposed by the library."""

    def __init__(self) -> None:
        self._smoothed: float | None = None   # None until the first frame
        self._block_min = np.inf
        self._block_frames = 0
        self._minima: deque[float] = deque(maxlen=BACKGROUND_BLOCKS)
        self.level = np.inf

    @property
    def known(self) -> bool:
        return bool(np.isfinite(self.level))

    def update(self, power: float) -> None:
        power = max(power, NOISE_FLOOR)   # digital silence is no background to measure by
        smoothed = power if self._smoothed is None else self._smoothed + BACKGROUND_ALPHA * (power - self._smoothed)
        self._smoothed = smoothed
        self._block_min = min(self._block_min, smoothed)
        self._block_frames += 1
        if self._block_frames == BACKGROUND_BLOCK_FRAMES:
            self._minima.append(self._block_min)
            self._block_min, self._block_frames = np.inf, 0
            self.level = min(self._minima) * _BACKGROUND_BIAS
        elif not self._minima:
            self.level = self._block_min * _BACKGROUND_BIAS   # the first block, so far


def reduction_db(echo_in: float, echo_out: float) -> float:
    """Echo at the mic over echo left (both summed, backgrounds out), capped at `ERLE_CAP_DB`."""
    if echo_in <= 0:
        return 0.0
    if echo_out <= echo_in * _ERLE_CAP_RATIO:
        return ERLE_CAP_DB
    return 10 * float(np.log10(echo_in / echo_out))
