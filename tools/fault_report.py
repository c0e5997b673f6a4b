"""Writes `docs/reliability.md` from the fault suite's measurements and the soak run's samples.

`python -m tools.fault_report` (what `make test-faults` runs after the suite) reads
`build/faults/results.json`, written by the suite's session-finish hook, and regenerates the
faults table; `tools/soak.py` regenerates the soak section through `write_soak_section`.
Each generated part sits between marker comments, so the hand-written parts of the document
(the findings) survive every regeneration, and a fault run does not erase the soak numbers.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from tools import REPO

DOC: Final = REPO / "docs" / "reliability.md"
RESULTS_FILE: Final = REPO / "build" / "faults" / "results.json"

E2E_CALL: Final = "tests/e2e/test_call.py"


@dataclass
class Measurement:
    """One verified fault: its catalogue key, the test, recovery times (s) and details."""

    key: str
    test: str
    recovery_s: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = "passed"


@dataclass(frozen=True)
class Fault:
    """A row of the table: the fault, what the device does, and what "recovered" means."""

    key: str
    fault: str
    behaviour: str
    recovered_when: str
    where: str


FAULTS: Final[tuple[Fault, ...]] = (
    Fault("unreachable_at_start", "Agent unreachable at start (nothing listens), then reachable",
          "Starts anyway (buttons, LEDs, mute work offline); retries with full-jitter backoff "
          "(status LED blinking); connects at the next attempt once the server is up",
          "server up -> in_call (bound: backoff cap + connect)", "tests/faults/test_network_faults.py"),
    Fault("http_503", "HTTP 503 on the upgrade, three times, then accepted",
          "Counts each refusal, retries with backoff (Retry-After is a floor), then connects; "
          "mute kept", "3rd refusal -> in_call", "tests/faults/test_network_faults.py"),
    Fault("http_401", "HTTP 401 on the upgrade",
          "Exactly one attempt; auth_error state (double-blink LED), no retry until a button "
          "press, `ctl call` or SIGHUP; mute kept", "SIGHUP -> in_call",
          "tests/faults/test_network_faults.py (+ " + E2E_CALL + ")"),
    Fault("drops", "TCP connection dropped mid-call (no close frame), N times in a row",
          "Reconnects every time (new session, mute kept, nothing sent while muted); file "
          "descriptors and threads do not grow", "drop -> in_call (each)", "tests/faults/test_network_faults.py"),
    Fault("close_4401", "Close code 4401 (unauthorized) mid-call",
          "No reconnect: auth_error until a user action or SIGHUP; mute kept", "SIGHUP -> in_call",
          "tests/faults/test_network_faults.py"),
    Fault("close_4403", "Close code 4403 (forbidden) mid-call",
          "No reconnect: auth_error until a user action or SIGHUP; mute kept", "SIGHUP -> in_call",
          "tests/faults/test_network_faults.py"),
    Fault("close_1011", "Close code 1011 (server error) mid-call",
          "Reconnects with backoff; mute kept", "close -> in_call", "tests/faults/test_network_faults.py"),
    Fault("close_1006", "Abnormal closure (1006: the socket vanishes, no close frame)",
          "Reconnects with backoff; mute kept", "drop -> in_call", "tests/faults/test_network_faults.py"),
    Fault("stop_reading", "Server stops reading (TCP send buffers fill)",
          "Sends time out and are counted; the uplink queue stays at its bound (2 s) and drops the "
          "oldest audio (counted); RSS flat; status and hang-up still answer; the stall itself is "
          "noticed by the keepalive (ping fails or no pong: <= ping_interval + ping_timeout, 30 s)",
          "hang-up -> socket closed -> a new call in_call", "tests/faults/test_network_faults.py"),
    Fault("flood", "Server floods minutes of agent audio in about a second",
          "Jitter buffer holds at most its bound; the rest is dropped and counted "
          "(jitter_overflow_bytes); RSS bounded; the call goes on",
          "flood sent -> all of it received (agent stopped talking)", "tests/faults/test_network_faults.py"),
    Fault("garbage", "Malformed frames: invalid JSON, arrays, unknown types, missing fields, bad "
          "base64, odd length, binary, 2 MB", "Each kind logged once, counted, ignored; audio keeps "
          "playing and the uplink keeps flowing", "no interruption", E2E_CALL),
    Fault("wrong_types", "Known types with wrong field types; a 2 MB audio delta; 100 k-deep JSON",
          "Counted per kind (invalid_<type>, oversized, invalid_json) and ignored; a malformed "
          "session.closed does not end the call; valid audio after them plays",
          "no interruption (garbage -> valid audio played)", "tests/faults/test_protocol_faults.py"),
    Fault("session_timeout", "session.closed reason=timeout (always mode)",
          "Clean end (no network error), immediately a new session; mute kept",
          "session.closed -> in_call", "tests/faults/test_network_faults.py (+ " + E2E_CALL + ")"),
    Fault("capture_lost", "Microphone vanishes mid-call, then comes back",
          "HardwareLost once: status shows the fault, status LED fast-blinks, the call goes on; "
          "reopened with backoff (0.5 s doubling to 5 s); HardwareBack clears it; uplink resumes",
          "replug -> uplink audio reaches the server again", "tests/faults/test_hardware_faults.py"),
    Fault("playback_lost", "Speaker vanishes mid-call, then comes back",
          "As for the microphone; the render clock resumes", "replug -> a period played again",
          "tests/faults/test_hardware_faults.py"),
    Fault("underrun", "CPU starvation (a thread holding the GIL for 100+ ms at a time)",
          "The speaker runs dry: underruns counted, no error; playback continues when the CPU is back",
          "load end -> the next period played", "tests/faults/test_hardware_faults.py"),
    Fault("tls_untrusted", "TLS server with a self-signed (untrusted) certificate",
          "Refuses (CERTIFICATE_VERIFY_FAILED), reports a retryable network error and retries with "
          "backoff; never sends the upgrade request (the key never leaves)", "n/a (must not connect)",
          "tests/faults/test_security.py"),
    Fault("control_garbage", "Garbage on the local control socket (random bytes, deeply nested JSON)",
          "Answers {ok: false}, counts it; the control socket keeps serving", "n/a",
          "tests/faults/test_security.py, tests/test_fuzz.py"),
)


# -- results file --------------------------------------------------------------------------------
def save_results(results: list[Measurement], form: str, path: Path = RESULTS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"form": form, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": host_line(),
            "results": [asdict(m) for m in results]}
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_results(path: Path = RESULTS_FILE) -> tuple[list[Measurement], dict[str, Any]]:
    data = json.loads(path.read_text())
    return [Measurement(**m) for m in data["results"]], data


def host_line() -> str:
    cpus = os.cpu_count() or 0
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {cpus} CPUs{' (' + model + ')' if model else ''}, Python {platform.python_version()}"


# -- the document ----------------------------------------------------------------------------------
SKELETON: Final = """# Reliability

How the appliance behaves when things go wrong, measured by the fault-injection suite
(`tests/faults`, the real service process against the local agent simulator), and how its
resources behave over a long call (`tools/soak.py`). The tables between the marker comments
are generated; edit the rest by hand.

<!-- BEGIN faults -->
<!-- END faults -->

<!-- BEGIN soak -->
<!-- END soak -->
"""


def _replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def update_doc(name: str, body: str, doc: Path = DOC) -> None:
    text = doc.read_text() if doc.exists() else SKELETON
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(_replace_block(text, name, body))


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_times(times: list[float]) -> str:
    if not times:
        return "verified"
    if len(times) == 1:
        return _fmt_time(times[0])
    return f"median {_fmt_time(statistics.median(times))}, max {_fmt_time(max(times))} (n={len(times)})"


def _fmt_details(details: dict[str, Any]) -> str:
    parts = []
    for key, value in details.items():
        if isinstance(value, float):
            value = round(value, 2)
        parts.append(f"{key}: {value}")
    return "; ".join(parts).replace("|", "/")


def faults_body(results: list[Measurement], form: str, date: str | None = None, host: str | None = None) -> str:
    by_key: dict[str, list[Measurement]] = {}
    for m in results:
        by_key.setdefault(m.key, []).append(m)
    lines = [
        "## Faults",
        "",
        f"Measured {date or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {host or host_line()}, "
        f"{form} form (`make test` runs the short form; `make test-faults` the full one: more "
        "repetitions, longer faults). Recovery time: from the end of the fault to the recovered "
        "state named in the third column, as seen by the test (service log line arrival, simulator "
        "record or counters). Backoff in these runs: 0.2 s doubling to 2 s (production: 1 s to 30 s).",
        "",
        "| fault | what the device does | recovered when | measured recovery | details | test |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fault in FAULTS:
        measured = by_key.get(fault.key, [])
        if measured:
            times = [t for m in measured for t in m.recovery_s]
            details = "; ".join(_fmt_details(m.details) for m in measured if m.details)
            failed = any(m.outcome != "passed" for m in measured)
            value = ("FAILED; " if failed else "") + _fmt_times(times)
        elif fault.where.startswith("tests/e2e"):
            value, details = "verified (e2e)", ""
        else:
            value, details = "not run", ""
        where = ", ".join(f"`{path}`" for path in re.split(r",\s*|\s*\(\+\s*|\)", fault.where) if path)
        lines.append(f"| {fault.fault} | {fault.behaviour} | {fault.recovered_when} | {value} | {details} "
                     f"| {where} |")
    return "\n".join(lines) + "\n"


def write_faults_section(results: list[Measurement], form: str, doc: Path = DOC,
                         date: str | None = None, host: str | None = None) -> None:
    update_doc("faults", faults_body(results, form, date, host), doc)


def write_soak_section(body: str, doc: Path = DOC, name: str = "soak") -> None:
    update_doc(name, body, doc)


def main(argv: list[str] | None = None) -> int:
    path = Path(argv[0]) if argv else RESULTS_FILE
    if not path.exists():
        print(f"no fault results at {path}: run the fault suite first (make test-faults)", file=sys.stderr)
        return 1
    results, meta = load_results(path)
    write_faults_section(results, meta.get("form", "?"), date=meta.get("date"), host=meta.get("host"))
    print(f"wrote {DOC.relative_to(REPO)} ({len(results)} measurements, {meta.get('form')} form)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
