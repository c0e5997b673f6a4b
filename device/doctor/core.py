"""The pieces every `doctor` check shares: the result type, crash-proof running, key redaction, output.

A check is a small function returning a `CheckResult`; `run_check` turns any exception it raises
into a FAIL line carrying the exception text, so one broken check never hides the others. Every
text that leaves the doctor goes through `Redactor` first: the API key never reaches the screen,
the JSON or a bug report, whatever an exception or a server put in a message.
"""
from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

from device.service.redact import SecretScrubber

log = logging.getLogger(__name__)



class Status(enum.StrEnum):
    """How a check went (a value). Only FAIL makes `doctor` exit non-zero."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One line of the checklist (an immutable value; built on the thread that ran the check).

    `detail` says what was found, `fix` (one sentence, empty on PASS) what to do about it, `data`
    holds numbers for `--json` (delays, levels, versions).
    """

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def passed(cls, name: str, detail: str, **data: Any) -> CheckResult:
        return cls(name, Status.PASS, detail, "", data)

    @classmethod
    def warn(cls, name: str, detail: str, fix: str, **data: Any) -> CheckResult:
        return cls(name, Status.WARN, detail, fix, data)

    @classmethod
    def fail(cls, name: str, detail: str, fix: str, **data: Any) -> CheckResult:
        return cls(name, Status.FAIL, detail, fix, data)

    @classmethod
    def skip(cls, name: str, detail: str, **data: Any) -> CheckResult:
        return cls(name, Status.SKIP, detail, "", data)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix,
                "seconds": round(self.seconds, 3), "data": self.data}


class Redactor(SecretScrubber):
    """The shared scrubber (device/service/redact.py) that also cleans whole check results.

    Immutable after construction; any thread may use it.
    """

    def result(self, result: CheckResult) -> CheckResult:
        return replace(result, detail=self.text(result.detail), fix=self.text(result.fix),
                       data=self.data(result.data))


@contextlib.contextmanager
def quiet_libraries(what: str) -> Iterator[None]:
    """Keep alsa-lib's and gpiozero's own chatter off the screen while `what` runs: the doctor's
    line for it says what went wrong, in words a person can act on.

    alsa-lib prints its errors from C straight to file descriptor 2 (pyalsaaudio does not expose
    `snd_lib_error_set_handler`), so fd 2 is pointed at a temporary file meanwhile; Python warnings
    (gpiozero's PinFactoryFallback) are caught. Both are logged at DEBUG (`ATOMS_LOG_LEVEL=DEBUG`).
    Main thread only: fd 2 and the warnings filters are process-wide.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read(64 * 1024).decode("utf-8", "replace").strip()
            if text:
                log.debug("%s: library messages: %s", what, text)
            for warning in caught:
                log.debug("%s: library warning: %s", what, warning.message)


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def run_check(name: str, check: Callable[[], CheckResult], redactor: Redactor) -> CheckResult:
    """Run one check; an exception becomes a FAIL line with its text. Always redacted and timed."""
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:
        log.debug("check %s raised", name, exc_info=True)
        result = CheckResult.fail(name, f"the check itself failed: {describe_exception(exc)}",
                                  "report this with the output of `atoms-appliance doctor --json`")
    return replace(redactor.result(result), seconds=time.monotonic() - started)


LABELS: Final = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def format_result(result: CheckResult, name_width: int = 14) -> str:
    """`PASS  dns             resolved ...` and, for WARN and FAIL, an indented `fix:` line."""
    line = f"{LABELS[result.status]}  {result.name:<{name_width}}  {result.detail}"
    if result.fix and result.status in (Status.WARN, Status.FAIL):
        line += f"\n      {'':<{name_width}}  fix: {result.fix}"
    return line


def summary(results: list[CheckResult], seconds: float) -> str:
    counts = {s: sum(r.status is s for r in results) for s in Status}
    parts = [f"{counts[Status.PASS]} passed"]
    if counts[Status.WARN]:
        parts.append(f"{counts[Status.WARN]} warning{'s' * (counts[Status.WARN] > 1)}")
    if counts[Status.FAIL]:
        parts.append(f"{counts[Status.FAIL]} failed")
    if counts[Status.SKIP]:
        parts.append(f"{counts[Status.SKIP]} skipped")
    return f"{', '.join(parts)} in {seconds:.1f} s"


def failed(results: Iterable[CheckResult]) -> bool:
    return any(r.status is Status.FAIL for r in results)


def to_json(results: list[CheckResult], seconds: float, extra: dict[str, Any] | None = None) -> str:
    """The `--json` document: ok, seconds, checks (and `extra`, e.g. the audio measurements)."""
    doc: dict[str, Any] = {"ok": not failed(results), "seconds": round(seconds, 2),
                           "checks": [r.to_json() for r in results]}
    doc.update(extra or {})
    return json.dumps(doc, indent=2, default=str)
