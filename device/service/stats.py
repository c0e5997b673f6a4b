"""Stats: a JSON snapshot of counters written every `stats_interval` seconds and on exit."""
from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def rss_mb() -> float:
    """Resident set size of this process in MB (from /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)


def write_json_atomic(path: Path, data: dict[str, Any], durable: bool = False) -> None:
    """Write JSON so a reader never sees half a file (temp file + rename in the same folder).

    `durable`: also on the disk before returning (the file, then the rename in its folder), so
    that a power cut right after cannot bring the old content back: ext4 commits a rename only
    within its 5 s journal interval. Costs a flush (milliseconds on an SD card): for state that
    must survive (mute), not for counters written every few seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # counters only, no secrets: readable by monitoring
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
