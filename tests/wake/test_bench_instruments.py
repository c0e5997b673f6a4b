"""The wake word benchmark's instruments (tools/wake_negatives.py, tools/bench_wake.py): the negative
audio is deterministic, of the kind it says, and never names a wake word; the report replaces its own
section of docs/benchmarks.md and leaves the others."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tools import bench_wake, wake_negatives


def test_the_prose_read_as_negatives_names_no_wake_word() -> None:
    paragraphs = wake_negatives.prose_paragraphs()
    assert sum(len(p.split()) for p in paragraphs) > 5000   # well over an hour's worth is not needed here
    assert not any(wake_negatives.WAKE_WORDS.search(p) for p in paragraphs)


def test_music_and_noise_are_deterministic_and_as_long_as_asked() -> None:
    for make in (wake_negatives.music_segments, wake_negatives.noise_segments):
        first, again = list(make(15)), list(make(15))
        assert [s.pcm for s in first] == [s.pcm for s in again]
        assert 15 <= sum(s.seconds for s in first) <= 30
        for segment in first:
            x = np.frombuffer(segment.pcm, "<i2")
            assert np.abs(x).max() < 32767                      # no clipping
            assert 1e-3 < np.sqrt(np.mean((x / 32768.0) ** 2))  # not silence


def test_the_report_replaces_its_own_section_only(tmp_path: Path) -> None:
    target = tmp_path / "benchmarks.md"
    vm = "## In a virtual machine\n\nVM figures.\n"
    target.write_text("# Benchmarks\n\npipeline figures\n\n" + vm)
    bench_wake.write_section(bench_wake.WAKE_SECTION + "\n\nfirst run\n", target)
    bench_wake.write_section(bench_wake.WAKE_SECTION + "\n\nsecond run\n", target)
    text = target.read_text()
    assert text.count(bench_wake.WAKE_SECTION) == 1 and "second run" in text and "first run" not in text
    assert text.startswith("# Benchmarks\n\npipeline figures\n") and vm in text


def test_the_report_shows_every_measure_against_its_target() -> None:
    clean = {"espeak": 0.75, "espeak_n": 96, "recordings": 3, "recordings_n": 3, "double": [],
             "missed": ["espeak en+f5 120 wpm p30 'okay nabu'"] * 2}
    rates = {m: dict.fromkeys(bench_wake.CONDITIONS, clean) for m in bench_wake.BUILTIN_MODELS}
    fa = {"hours": 1.03, "seconds": {"speech": 2400.0, "music": 600.0, "noise": 720.0}, "wall_s": 400.0,
          "accepts": [{"model": "alexa", "kind": "speech", "label": "en 160 wpm", "at_s": 12.5, "score": 0.93}],
          "per_hour": {m: (0.97 if m == "alexa" else 0.0) for m in bench_wake.BUILTIN_MODELS},
          "dsp_ms_per_s": 7.0, "detector_ms_per_s": dict.fromkeys(bench_wake.BUILTIN_MODELS, 6.0)}
    counts = dict.fromkeys(bench_wake.BUILTIN_MODELS, 0)
    agent = {"+0 dB": {"counts": {"processed": counts, "raw": {**counts, "okay_nabu": 4}}, "seconds": 270.0,
                       "calls": 5, "erle_db": 43.0}}
    text = bench_wake.report(rates, fa, agent, {"base_mb": 49.0, "first_mb": 4.2, "each_more_mb": 0.2},
                             ["a missed target"], quick=False)
    assert text.startswith(bench_wake.WAKE_SECTION)
    assert "| okay_nabu (0.85) | 75% of 96 / 3 of 3 |" in text
    assert "| okay_nabu | 0 | **0.00** | <= 0.5 |" in text and "| alexa | 1 | 0.97 |" in text
    assert "120 wpm 2" in text and "alexa at 12.5 s in speech" in text
    assert "**0 (okay_nabu 0," in text and "| 4 (okay_nabu 4," in text
    assert "| detection okay_nabu / capture DSP | 0.86 |" in text and "4.2 MB" in text
    assert text.rstrip().endswith("Missed: a missed target")


def test_the_memory_probe_runs_in_a_fresh_process() -> None:
    rss = bench_wake.rss_added()
    assert rss["base_mb"] > 10 and rss["first_mb"] > 0 and rss["each_more_mb"] >= 0
