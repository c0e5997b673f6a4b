"""Debug recordings on demand: SIGUSR1, `ctl dump-audio` and a lost device ask; one thread writes.

A dump copies the recorder's rings and writes ~5 MB of WAV (30 s at 16 + 16 + 48 kHz: ~4 ms on
an x86 host into the page cache; 96 MB for the 600 s maximum: 90-380 ms; more on a Pi's SD card),
so neither the main loop nor a signal handler does it: they only enqueue a request (~5 us), and
`DebugDumper`'s thread writes.
"""
from __future__ import annotations

import logging
import queue
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from device.core.threads import OwnedThread
from device.diagnostics.recorder import DebugRecorder, DumpedFile
from hw.clock import Clock, RealClock

log = logging.getLogger(__name__)

# A lost device's recording goes to its own folder, so a later dump (`ctl dump-audio`, SIGUSR1,
# the one at exit) does not overwrite the audio leading up to the unplug.
HARDWARE_LOST_DIR: Final = "hardware-lost"
# A device lost with less audio than this recorded (absent at boot) gets no dump: it would only
# overwrite the last outage's recording with next to nothing.
MIN_OUTAGE_SECONDS: Final = 1.0
# At most one outage recording per this many seconds: a USB device that keeps dropping out would
# otherwise rewrite ~5 MB on the SD card every few seconds (the folder keeps only the latest).
OUTAGE_DUMP_INTERVAL: Final = 300.0


@dataclass(frozen=True)
class _Request:
    reason: str
    directory: Path | None   # None: the recorder's own directory
    future: Future[list[DumpedFile]]


class DebugDumper(OwnedThread):
    """Writes the debug recorder's WAV files on its own thread ("debug-dump").

    `request` may be called from any thread and from a signal handler: it only creates a Future and
    puts it on a `queue.SimpleQueue`, whose `put` is reentrant. Requests that wait together are
    served by one dump per directory. A failed dump (a full or read-only disk) is logged and set on
    the futures; the thread goes on. `stop` cancels the requests not yet started.
    """

    def __init__(self, recorder: DebugRecorder, clock: Clock | None = None,
                 outage_interval: float = OUTAGE_DUMP_INTERVAL) -> None:
        super().__init__("debug-dump")
        self.recorder = recorder
        self.requested = 0   # requests made (diagnostics and tests: not atomic across threads)
        self.dumps = 0       # dumps written (this thread)
        self.failures = 0
        self.outage_interval = outage_interval
        self.skipped_outages = 0   # outages not recorded: the last outage recording is too recent
        self._clock = clock or RealClock()
        self._last_outage: float | None = None
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()

    def request(self, reason: str, directory: Path | None = None) -> Future[list[DumpedFile]]:
        """Ask for a dump into `directory` (default: the recorder's); the Future gets the files."""
        future: Future[list[DumpedFile]] = Future()
        self.requested += 1
        self._requests.put(_Request(reason, directory, future))
        return future

    def request_outage(self, device: str) -> Future[list[DumpedFile]] | None:
        """The first device of an outage was lost (main thread): ask for the audio leading up to it
        in HARDWARE_LOST_DIR, unless less than MIN_OUTAGE_SECONDS was recorded or the last outage
        recording is younger than `outage_interval`. Returns the request, or None."""
        held = self.recorder.held_seconds()
        if held < MIN_OUTAGE_SECONDS:
            log.info("only %.2f s of audio recorded: no debug recording for this outage", held)
            return None
        now = self._clock.monotonic()
        if self._last_outage is not None and now - self._last_outage < self.outage_interval:
            self.skipped_outages += 1
            log.info("%s lost: no debug recording (the last one is %.0f s old; at most one per %.0f s)",
                     device, now - self._last_outage, self.outage_interval)
            return None
        self._last_outage = now
        return self.request(f"{device} lost", self.recorder.directory / HARDWARE_LOST_DIR)

    def stop(self) -> None:
        super().stop()
        self._requests.put(None)   # wake the thread now

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                first = self._requests.get()
                batch = [first]
                while True:
                    try:
                        batch.append(self._requests.get_nowait())
                    except queue.Empty:
                        break
                if not self.stopping.is_set():
                    self._serve([r for r in batch if r is not None])
                else:
                    self._cancel(batch)
        finally:
            while True:
                try:
                    self._cancel([self._requests.get_nowait()])
                except queue.Empty:
                    break

    @staticmethod
    def _cancel(batch: list[_Request | None]) -> None:
        for r in batch:
            if r is not None:
                r.future.cancel()

    def _serve(self, batch: list[_Request]) -> None:
        groups: dict[Path | None, list[_Request]] = {}
        for r in batch:
            if r.future.set_running_or_notify_cancel():
                groups.setdefault(r.directory, []).append(r)
        for directory, requests in groups.items():
            reasons = ", ".join(dict.fromkeys(r.reason for r in requests))
            try:
                files = self.recorder.dump(directory, reasons)
            except Exception as exc:   # OSError mostly: the thread must survive to serve the next
                self.failures += 1
                log.error("debug recording (%s) to %s failed: %s", reasons,
                          directory or self.recorder.directory, exc, exc_info=not isinstance(exc, OSError))
                for r in requests:
                    r.future.set_exception(exc)
                continue
            self.dumps += 1
            for r in requests:
                r.future.set_result(files)


def dump_reply(dumper: DebugDumper | None, timeout: float) -> dict[str, Any]:
    """`ctl dump-audio` (the control thread): write the debug recording now, wait for it and
    reply with the files; an error reply when recording is off or the dump fails."""
    if dumper is None:
        return {"ok": False, "error": "debug recording is off: set ATOMS_DEBUG_RECORD_DIR (or "
                "debug_record_dir in config.toml) to a writable directory and restart the service"}
    directory = dumper.recorder.directory
    try:
        files = dumper.request("ctl dump-audio").result(timeout)
    except TimeoutError:
        return {"ok": False, "error": f"the dump did not finish within {timeout:g} s; "
                "it goes on, see the log"}
    except CancelledError:
        return {"ok": False, "error": "the service is stopping"}
    except Exception as exc:  # noqa: BLE001 - logged by the dumper; the control thread must go on
        return {"ok": False, "error": f"cannot write the debug recording to {directory}: {exc}"}
    return {"ok": True, "cmd": "dump_audio", "directory": str(directory),
            "files": [f.as_dict() for f in files]}
