"""One running service per control socket and per state directory: `flock` lock files.

A second `run` with the same socket or state directory would otherwise take over the socket (and
`ctl mute` would mute the wrong process while the first keeps its microphone open) and race the
first on state.json. The kernel drops an `flock` when its process dies, however it dies, so a
lock is never stale; the lock files themselves stay and are reused.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# EX_TEMPFAIL from sysexits.h: try again later (the other instance may stop); distinct from the
# config error 78, so systemd may retry while a hand-started copy is still running.
EXIT_ALREADY_RUNNING: Final = 75
LOCK_MODE: Final = 0o600


class AlreadyRunning(Exception):
    """Another live process holds the lock. The message names it and the fix."""


class InstanceLock:
    """Holds the lock files of one service instance (main thread: acquire at start, release at exit).

    `paths` are the lock files: one beside the control socket, one in the state directory. A lock
    file that cannot be created because its folder is not writable is logged and skipped, unless
    `required` (the socket's folder must be writable anyway: the socket is created there).
    """

    def __init__(self, socket_path: Path, state_dir: Path) -> None:
        self.socket_lock = socket_path.with_name(socket_path.name + ".lock")
        self.state_lock = state_dir / "instance.lock"
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take both locks or raise AlreadyRunning (releasing what was taken)."""
        try:
            self._take(self.socket_lock, "control socket", required=True)
            self._take(self.state_lock, "state directory", required=False)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path, what: str, required: bool) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
        except OSError as exc:
            if required:
                raise
            log.warning("cannot create the instance lock %s (%s); a second copy using the same %s "
                        "would not be detected", path, exc.strerror, what)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                who = f"process {holder}" if holder else "another process"
                raise AlreadyRunning(
                    f"another atoms-appliance ({who}) is running with this {what} ({path.parent}); "
                    "stop it first (sudo systemctl stop atoms-appliance), or give this one its own "
                    "ATOMS_CONTROL_SOCKET and ATOMS_STATE_DIR") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fds.append(fd)

    def release(self) -> None:
        """Drop the locks (idempotent). The files stay: removing them would race a starting copy."""
        for fd in self._fds:
            try:
                os.close(fd)   # closing the descriptor releases its flock
            except OSError:
                pass
        self._fds.clear()

    @property
    def held(self) -> bool:
        return bool(self._fds)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
