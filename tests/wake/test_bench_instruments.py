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
