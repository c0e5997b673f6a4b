"""State that must survive, and one instance per socket and state directory (issue 13, items 4, 6).

- state.json: written durably (the file and its folder fsynced around the rename); anything but
  what we write starts muted with a log line; a save that fails is logged once per outage and
  shown (`unsaved`);
- the repeating-failure log (`Outage`): once per outage, then one line when it works again;
- `InstanceLock`: a second holder is refused with a message naming the first one's pid.
The two-process test (a second `run` on the same socket) is tests/e2e/test_instances.py.
"""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from device.service.instance import AlreadyRunning, InstanceLock
from device.service.outage import Outage
from device.service.persist import PersistentState


@pytest.mark.parametrize("content", [
    "[]", '{"muted": "false"}', '{"muted": 0}', '{"muted": null}', '"muted"', "{}", "true",
    '{"mooted": false}', "not json", b"\xff\xfe".decode("latin-1"),
])
def test_state_we_did_not_write_starts_muted_with_a_log_line(
        tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    (tmp_path / "state.json").write_text(content, encoding="latin-1")
    assert PersistentState(tmp_path).load_muted() is True
    assert "starting muted" in caplog.text and caplog.text.count("\n") == 1


def test_round_trip_and_no_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    state = PersistentState(tmp_path / "new")
    assert state.load_muted() is False and caplog.text == ""   # first boot: unmuted, silently
    for muted in (True, False, True):
        assert state.save_muted(muted)
        assert state.load_muted() is muted and state.unsaved is None
    assert json.loads(state.path.read_text()) == {"muted": True}


def test_saves_are_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("folder" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    renames: list[int] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        renames.append(len(synced))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert PersistentState(tmp_path).save_muted(True)
    # The data before the rename, the folder (holding the rename) after it.
    assert synced == ["file", "folder"] and renames == [1]


def test_a_mute_that_cannot_be_saved_is_kept_shown_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the folder should be")
    state = PersistentState(blocker)
    with caplog.at_level(logging.WARNING):
        for muted in (True, False, True):
            assert state.save_muted(muted) is False
        assert state.unsaved is True and state.saves.failures == 3
        assert caplog.text.count("failed") == 1 and "will not survive a restart" in caplog.text
        blocker.unlink()
        assert state.save_muted(True) and state.unsaved is None
        assert "works again after 3 failure(s)" in caplog.text


def test_outage_logs_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(logging.getLogger("t"), "writing stats")
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            outage.failed(OSError(28, "No space left on device"))
        outage.ok()
        outage.ok()
        outage.failed("again")
    lines = caplog.text.splitlines()
    assert len(lines) == 3 and "No space left" in lines[0] and "after 5 failure(s)" in lines[1]
    assert outage.failures == 6 and outage.failing


def test_a_second_instance_lock_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / "run" / "control.sock", tmp_path / "state")
    first.acquire()
    for sock, state_dir in ((tmp_path / "run" / "control.sock", tmp_path / "other"),
                            (tmp_path / "run2" / "control.sock", tmp_path / "state")):
        second = InstanceLock(sock, state_dir)
        with pytest.raises(AlreadyRunning, match=f"process {os.getpid()}"):
            second.acquire()
        assert not second.held   # what it took before the refusal was given back
    first.release()
    again = InstanceLock(tmp_path / "run" / "control.sock", tmp_path / "state")
    again.acquire()   # a lock is never stale: the files stay, the flock went with the holder
    assert again.held
    again.release()


def test_an_unwritable_state_dir_does_not_stop_the_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    blocker = tmp_path / "state"
    blocker.write_text("")
    lock = InstanceLock(tmp_path / "control.sock", blocker)
    lock.acquire()
    assert lock.held and "would not be detected" in caplog.text
    lock.release()
