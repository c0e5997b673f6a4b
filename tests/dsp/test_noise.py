"""Noise suppression and auto gain (webrtc-noise-gain) after the canceller.

How SNR is measured: noise suppression applies a time- and frequency-varying gain to the mixture,
so its output cannot be split into "speech out" and "noise out". We follow the idea of ITU-T G.160
(voice enhancement devices): known speech with long pauses, white noise added, and then
- noise level reduction (NLR): the output noise floor in the pauses vs the input's;
- speech level change (SLC): output power in speech-active frames minus the noise floor, vs the
  clean speech power in those frames (NS must not eat the talker);
- SNR improvement (SNRI): SNR = (active power - pause power) / pause power, output vs input.
  On the input this recovers the true SNR; on the output it is optimistic, because more noise gets
  through while speech is present than in pauses, so we assert with a wide margin. (Projecting the
  output onto the clean speech instead is pessimistic: it counts NS's spectral shaping of the
  speech as noise and shows almost no gain at 5 dB SNR.)
- a cross-check of SNRI by gain transfer: estimate the suppression gain per STFT bin as
  |out| / |in| and apply it to the clean speech and the noise separately. It reads lower than the
  G.160-style figure (its bins do not match the suppressor's own), so it gets a lower bar.
Pauses are frames at least 200 ms from any speech; the first second (noise estimate warming up)
is not scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from device.audio.dsp import make_capture_dsp
from device.audio.formats import FRAME_BYTES
from tools.signals import (
    active_frames,
    frame_powers,
    from_pcm16,
    speech,
    to_pcm16,
    white_noise,
    with_pauses,
)

SPEECH_DBFS = -26.0
INPUT_SNR_DB = 5.0
PHRASES = ("Yes, I would like to book a table.", "For four people tomorrow evening.",
           "Around seven thirty if possible.", "Near the window, please.")


@dataclass
class NoiseScores:
    nlr_db: float
    slc_db: float
    snr_in_db: float
    snr_out_db: float
    transfer_snri_db: float


def _process(noise_suppression: int, auto_gain: int, x: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    dsp = make_capture_dsp("off", noise_suppression, auto_gain)
    pcm = to_pcm16(x)
    out, flags = [], []
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        out.append(dsp.process(pcm[i:i + FRAME_BYTES]))
        flags.append(dsp.last_is_speech)
    return from_pcm16(b"".join(out)), flags


def _clean_speech(level: float) -> np.ndarray:
    parts = [speech(p, 16000, voice="en-us+f3", level=level) for p in PHRASES]
    x = with_pauses(parts, 16000, pause_s=1.0)
    return x[: len(x) // 160 * 160]


def score(noise_suppression: int) -> NoiseScores:
    clean = _clean_speech(SPEECH_DBFS)
    noise = white_noise(len(clean), SPEECH_DBFS - INPUT_SNR_DB, seed=3)
    mixture = clean + noise
    out, _ = _process(noise_suppression, 0, mixture)
    active = active_frames(clean, below_peak_db=40.0)
    near_speech = np.convolve(active.astype(float), np.ones(41), "same") > 0
    pause = ~near_speech
    active[:100] = pause[:100] = False
    p_in, p_out, p_clean = frame_powers(mixture), frame_powers(out), frame_powers(clean)
    floor_in, floor_out = p_in[pause].mean(), p_out[pause].mean()
    speech_out = p_out[active].mean() - floor_out
    transfer = _gain_transfer_snri(clean, noise, out, active)
    return NoiseScores(
        nlr_db=10 * np.log10(floor_in / floor_out),
        slc_db=10 * np.log10(speech_out / p_clean[active].mean()),
        snr_in_db=10 * np.log10((p_in[active].mean() - floor_in) / floor_in),
        snr_out_db=10 * np.log10(speech_out / floor_out),
        transfer_snri_db=transfer,
    )


def _stft(x: np.ndarray, size: int = 256, hop: int = 64) -> np.ndarray:
    window = np.hanning(size)
    return np.array([np.fft.rfft(window * x[i:i + size]) for i in range(0, len(x) - size, hop)])


def _gain_transfer_snri(clean: np.ndarray, noise: np.ndarray, out: np.ndarray, active: np.ndarray,
                        hop: int = 64) -> float:
    mixture = clean + noise
    # The suppressor delays its output (~6 ms): align before comparing bins.
    lag = max(range(200), key=lambda d: float(np.dot(out[d:], mixture[:len(mixture) - d])))
    out = out[lag:]
    n = len(out)
    s, v, x, y = (_stft(a[:n], hop=hop) for a in (clean, noise, mixture, out))
    gain = np.clip(np.abs(y) / np.maximum(np.abs(x), 1e-9), 0.0, 1.5)
    frame_of_bin = np.minimum((np.arange(len(x)) * hop + 128) // 160, len(active) - 1)
    a = active[frame_of_bin]
    snr_in = np.sum(np.abs(s[a]) ** 2) / np.sum(np.abs(v[a]) ** 2)
    snr_out = np.sum(np.abs(gain[a] * s[a]) ** 2) / np.sum(np.abs(gain[a] * v[a]) ** 2)
    return float(10 * np.log10(snr_out / snr_in))


@pytest.mark.parametrize("level", [2, 3])
def test_noise_suppression_improves_snr(level: int) -> None:
    s = score(level)
    assert abs(s.snr_in_db - INPUT_SNR_DB) < 1.0, s     # the method reads the input right
    assert s.nlr_db >= 6.0, s                           # measured ~11 dB (2), ~16 dB (3)
    assert s.snr_out_db - s.snr_in_db >= 6.0, s         # measured ~10 dB (2), ~15 dB (3)
    assert abs(s.slc_db) < 3.0, s                       # the talker keeps their level
    assert s.transfer_snri_db >= 5.0, s                 # measured ~7 dB (2), ~9 dB (3)


def test_no_processing_is_bit_exact() -> None:
    """aec off, NS 0, AGC 0: the chain is a size-checking passthrough."""
    x = white_noise(16000, -20.0, seed=5)
    out, flags = _process(0, 0, x)
    assert np.array_equal(to_pcm16(out), to_pcm16(x))
    assert not any(flags)


def test_auto_gain_raises_quiet_speech() -> None:
    quiet = _clean_speech(-40.0)
    clean = quiet + white_noise(len(quiet), -80.0, seed=4)
    out, flags = _process(0, 3, clean)
    active = active_frames(clean)
    active[: len(active) // 2] = False   # after the gain has had time to adapt
    gain_db = 10 * np.log10(frame_powers(out)[active].mean() / frame_powers(clean)[active].mean())
    assert gain_db >= 6.0                # measured ~11 dB
    assert any(flags)
