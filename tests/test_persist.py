"""Mute survives a power cut: the state file is flushed to disk, then its folder (the rename)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from device.service import stats
from device.service.persist import PersistentState


def test_save_muted_syncs_the_file_and_then_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(stats.os, "fsync", fsync)
    state = PersistentState(tmp_path / "state")
    state.save_muted(True)
    assert synced == ["file", "dir"]
    assert state.load_muted() is True


def test_counters_are_not_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(stats.os, "fsync", synced.append)
    stats.write_json_atomic(tmp_path / "stats.json", {"frames": 1})
    assert synced == []
