"""Tests on a real sound card: opt-in (`make test-hardware`, i.e. ATOMS_TEST_HARDWARE=1).

They play sound through the speaker, so `make test` never runs them; elsewhere they skip. The
devices are the service's own settings: ATOMS_CAPTURE_DEVICE and ATOMS_PLAYBACK_DEVICE (both
`default` unless set), e.g. `ATOMS_CAPTURE_DEVICE=plughw:CARD=seeed2micvoicec make test-hardware`.
"""
from __future__ import annotations

import os

import pytest

from hw.alsa import AlsaAudioBackend


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ATOMS_TEST_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="real sound card tests: run `make test-hardware` on a device")
    for item in items:
        if "tests/hardware/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture
def backend() -> AlsaAudioBackend:
    return AlsaAudioBackend(capture_device=os.environ.get("ATOMS_CAPTURE_DEVICE", "default"),
                            playback_device=os.environ.get("ATOMS_PLAYBACK_DEVICE", "default"),
                            period_ms=10, buffer_periods=3)
