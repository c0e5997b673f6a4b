"""Log a repeating failure once per outage: the first failure, then the recovery (with a count).

A stats write every 10 s on a full disk would otherwise write the same error to the journal
8640 times a day, filling the disk that is already full.
"""
from __future__ import annotations

import logging


class Outage:
    """One kind of repeating failure (main thread). `failed()` on each failure, `ok()` on success."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0          # all failures ever (a counter for `ctl status`)
        self.current = 0           # failures in the outage in progress (0: none)
        self.last_error: str | None = None

    def failed(self, error: BaseException | str) -> None:
        self.failures += 1
        self.current += 1
        self.last_error = str(error)
        if self.current == 1:
            self.logger.error("%s failed: %s (repeats are counted, not logged, until it works again)",
                              self.what, error)

    def ok(self) -> None:
        if self.current:
            self.logger.warning("%s works again after %d failure(s)", self.what, self.current)
        self.current = 0
        self.last_error = None

    @property
    def failing(self) -> bool:
        return self.current > 0
