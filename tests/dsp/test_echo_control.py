"""The echo control stages wired into the capture chain: settings, drift on the reference, the
duplex mode in stats, status and events."""
from __future__ import annotations

import numpy as np
import pytest

from device.audio.dsp import make_capture_dsp
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


class _FakeDsp:
    def __init__(self) -> None:
        self.duplex_mode = "full"
        self.residual_echo_db: float | None = None


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
    assert watch.status() == {"duplex": "full", "residual_echo_db": 17.2} or \
        watch.status() == {"duplex": "full", "residual_echo_db": 17.3}
