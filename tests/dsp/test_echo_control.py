"""The echo control stages wired into the capture chain: settings, drift on the reference, the
duplex mode in stats, status and events."""
from __future__ import annotations

import numpy as np
import pytest

from device.audio.dsp import make_capture_dsp
from device.audio.duplex import CONVERGE_FRAMES, MIN_FRAMES
from device.audio.echo_control import EchoControl, EchoControlSettings
from device.audio.formats import FRAME_BYTES
from device.service.duplex_watch import DuplexWatch
from device.service.event_schema import DuplexEvent, parse_event

SILENT_FRAME = bytes(FRAME_BYTES)


def _tone(samples: int, rate: int) -> bytes:
    t = np.arange(samples) / rate
    return (6000 * np.sin(2 * np.pi * 500 * t)).astype("<i2").tobytes()


def test_defaults_run_the_adaptive_half_duplex_only_and_each_other_stage_is_opt_in() -> None:
    settings = EchoControlSettings()
    assert settings.adaptive_half_duplex and not settings.residual_echo and settings.drift_ppm == 0
    assert settings.any
    plain = make_capture_dsp("webrtc", 0, 0, echo=EchoControlSettings(adaptive_half_duplex=False))
    assert "duplex_half" not in plain.stats() and plain.duplex_mode == "full"
    plain.close()
    dsp = make_capture_dsp("webrtc", 0, 0)
    stats = dsp.stats()
    for key in ("duplex_half", "duplex_switches", "duplex_gated_frames", "double_talk_frames",
                "residual_suppressed_frames", "drift_compensated_ppm"):
        assert key in stats
    assert dsp.duplex_mode == "full" and dsp.residual_echo_db is None
    dsp.close()


def test_aec_off_has_no_echo_control() -> None:
    dsp = make_capture_dsp("off", 0, 0)
    assert "duplex_half" not in dsp.stats() and dsp.duplex_mode == "full"
    assert dsp.process(SILENT_FRAME) == SILENT_FRAME
    dsp.close()


@pytest.mark.parametrize("rate", [16000, 48000])
def test_drift_compensation_stretches_the_reference_the_canceller_gets(rate: int) -> None:
    control = EchoControl(EchoControlSettings(drift_ppm=1000.0, residual_echo=False,
                                              adaptive_half_duplex=False))
    frame = rate // 100
    given = got = 0
    for _ in range(500):   # 5 s
        pcm = _tone(frame, rate)
        given += len(pcm) // 2
        got += len(control.reference(pcm, rate)) // 2
    assert abs(got - given * 1.001) <= 20   # 5 s at 1000 ppm: 5 ms more, less the filter's lead-in
    assert control.stats()["drift_compensated_ppm"] == 1000


def test_the_chain_keeps_whole_reference_frames_under_drift() -> None:
    dsp = make_capture_dsp("webrtc", 0, 0, echo=EchoControlSettings(drift_ppm=-150.0))
    for _ in range(300):
        dsp.reference(_tone(160, 16000), 16000)
        out = dsp.process(SILENT_FRAME)
        assert len(out) == FRAME_BYTES
    stats = dsp.stats()
    assert stats["reference_pending_bytes"] < 320
    assert abs(stats["reference_frames"] - 300) <= 1
    dsp.close()


def _speechy(level_dbfs: float, i: int) -> bytes:
    """10 ms of noise at `level_dbfs`, in syllables (200 ms loud, 100 ms 20 dB down)."""
    level = level_dbfs if i % 30 < 20 else level_dbfs - 20
    x = np.random.default_rng(i).standard_normal(FRAME_BYTES // 2) * 32768 * 10 ** (level / 20)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def test_the_half_duplex_gate_comes_after_noise_suppression() -> None:
    """In a room the canceller does nothing for (its output is the mic), the half-duplex goes half;
    `process` still hands NS the frame untouched (NS must hear the room as it is), and `gate`, called
    on NS's output, turns that down by the gate's 40 dB."""
    control = EchoControl(EchoControlSettings())
    far = _speechy(-20.0, 0)
    for i in range(CONVERGE_FRAMES + MIN_FRAMES + 200):
        control.reference(far, 16000)
        mic = _speechy(-30.0, 1000 + i)
        assert control.process(mic, mic) == mic
    assert control.mode == "half", control.echo_reduction_db
    ns_out = _speechy(-30.0, 1)
    gated = np.frombuffer(control.gate(ns_out), "<i2").astype(float)
    loud = np.frombuffer(ns_out, "<i2").astype(float)
    assert 10 * np.log10(np.mean(loud ** 2) / max(np.mean(gated ** 2), 1e-9)) > 35


def test_the_chain_gates_the_noise_suppressors_output() -> None:
    """The same room through the whole chain with NS on: once half, a frame of agent echo leaves
    the chain 40 dB down, not merely suppressed as noise."""
    dsp = make_capture_dsp("webrtc", 2, 0)
    far = _speechy(-20.0, 0)
    outs = []
    for i in range(CONVERGE_FRAMES + MIN_FRAMES + 300):
        dsp.reference(far, 16000)
        outs.append(dsp.process(_speechy(-30.0, 1000 + i)))
    assert dsp.duplex_mode == "half"
    last = np.frombuffer(b"".join(outs[-50:]), "<i2").astype(float)
    assert 10 * np.log10(np.mean(last ** 2) / 32768 ** 2 + 1e-12) < -60
    dsp.close()


class _FakeDsp:
    def __init__(self) -> None:
        self.duplex_mode = "full"
        self.residual_echo_db: float | None = None
        self.residual_attenuation_db = 0.0


def test_duplex_watch_publishes_each_switch_once() -> None:
    dsp = _FakeDsp()
    published: list[DuplexEvent] = []
    watch = DuplexWatch(dsp, published.append)  # type: ignore[arg-type]
    watch.poll()
    assert published == []
    dsp.duplex_mode, dsp.residual_echo_db = "half", 17.25
    watch.poll()
    watch.poll()
    dsp.duplex_mode = "full"
    watch.poll()
    assert [e.mode for e in published] == ["half", "full"]
    assert published[0].residual_echo_db == 17.2 or published[0].residual_echo_db == 17.3
    for event in published:
        parse_event(event.model_dump())
    dsp.residual_attenuation_db = 7.25
    assert watch.status() in ({"duplex": "full", "residual_echo_db": r, "residual_attenuation_db": a}
                              for r in (17.2, 17.3) for a in (7.2, 7.3))
