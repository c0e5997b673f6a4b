"""A small client for systemd's service notification protocol (sd_notify(3)).

The service unit is `Type=notify` with `WatchdogSec=`: the main thread sends `READY=1` once buttons
and LEDs work (never waiting for the network), `STATUS=...` for `systemctl status`, `WATCHDOG=1`
from its loop while the audio threads are alive, and `STOPPING=1` on the way out.

Written on the `socket` module on purpose: the `sdnotify` and `systemd-python` packages add nothing
we need (the protocol is one datagram per message), and the latter needs libsystemd headers to
build. Everything here is a no-op when `NOTIFY_SOCKET` is unset (`atoms-appliance run` in a
terminal, tests), and nothing here ever raises: a lost notification is logged once, because the
service must keep working even if systemd cannot hear it.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Final, Self

log = logging.getLogger(__name__)

#: Environment variables systemd sets for a notify service (see sd_notify(3), sd_watchdog_enabled(3)).
NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"


class SystemdNotifier:
    """Talks to systemd's NOTIFY_SOCKET; used by the main thread of the service.

    Every method is safe to call when systemd is not listening: it does nothing. Sends are
    serialised by a lock, so a stray call from another thread cannot interleave, but by design
    only the main thread notifies (`NotifyAccess=main` in the unit rejects other processes).

    `environ` and `pid` are injectable for tests; they default to `os.environ` and `os.getpid()`,
    read once at construction like libsystemd does.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address: str | bytes | None = _socket_address(env.get(NOTIFY_SOCKET_ENV, ""))
        self._watchdog_usec: str = env.get(WATCHDOG_USEC_ENV, "")
        self._watchdog_pid: str = env.get(WATCHDOG_PID_ENV, "")
        self._pid: int = os.getpid() if pid is None else pid
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._status_sent: str | None = None   # the last STATUS= systemd has (not sent again)

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a notification socket."""
        return self._address is not None

    # -- the messages the service sends -------------------------------------------------------

    def ready(self) -> bool:
        """Tell systemd start-up is complete (`READY=1`): buttons and LEDs work. The status line
        is sent again after it, even if unchanged (a listener may wait for READY, then STATUS)."""
        self._status_sent = None
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by `systemctl status` (`STATUS=...`); the same line again
        is not re-sent."""
        # One datagram is a list of newline-separated assignments: a newline in the text would
        # start a bogus assignment, so fold it.
        line = "STATUS=" + " ".join(text.splitlines())
        if line == self._status_sent:
            return True
        sent = self.notify(line)
        self._status_sent = line if sent else None
        return sent

    def watchdog(self) -> bool:
        """Pet the watchdog (`WATCHDOG=1`); call at least every `watchdog_interval()` seconds."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Tell systemd a reload (SIGHUP) is in progress; send `ready()` when it is done."""
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down (`STOPPING=1`)."""
        return self.notify("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between `watchdog()` calls, or None when the watchdog is off or not ours.

        This is half of `WATCHDOG_USEC`, the margin sd_watchdog_enabled(3) recommends. None when
        `WATCHDOG_USEC` is unset or invalid, or when `WATCHDOG_PID` names another process (the
        variables leaked into a child).
        """
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != self._pid:
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 1_000_000 / 2

    # -- the transport --------------------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send one datagram of `KEY=VALUE` assignments; True if systemd got it.

        Returns False without doing anything when `NOTIFY_SOCKET` is unset, and False (logging a
        warning the first time only) when the send fails.
        """
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # Typical causes: systemd restarted its notify socket, or a sandbox hides it. A
                # warning per watchdog tick would flood the journal, so warn once.
                if not self._warned:
                    self._warned = True
                    log.warning("sd_notify to %r failed (further failures not logged): %s",
                                self._address, exc)
                self._close_locked()
                return False
        return True

    def close(self) -> None:
        """Close the socket; later calls reopen it. Idempotent."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _socket_address(value: str) -> str | bytes | None:
    """Turn a NOTIFY_SOCKET value into a `sendto` address: a path, or an abstract name.

    systemd writes abstract socket names with a leading '@' standing for the NUL byte; anything
    that is neither absolute nor abstract (e.g. a `vsock:` address, which we do not speak) is
    treated as no socket.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    if value:
        log.warning("ignoring NOTIFY_SOCKET=%r: only paths and abstract sockets are supported", value)
    return None
