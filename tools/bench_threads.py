"""Per-thread cost of a running process, from /proc: CPU, wake-ups and time slices per thread.

`make bench` reads these for the service in a paced call (tools/bench_paced.py): the kernel's own
per-thread counters, so nothing is added to the process being measured. For each thread
(`/proc/PID/task/TID`): `schedstat` gives the nanoseconds on a CPU and the time slices run;
`status` gives the voluntary context switches (the thread blocked: each is one wake-up later)
and the involuntary ones (preempted); `comm` gives the name (`device.core.threads` names the
service's own threads in the kernel). Threads with the same name (livekit's native workers)
are added up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadCounters:
    """One thread's (or one name's) kernel counters at one moment, or a difference of two."""

    name: str
    cpu_ns: int
    slices: int
    voluntary: int
    involuntary: int

    def minus(self, earlier: ThreadCounters) -> ThreadCounters:
        return ThreadCounters(self.name, self.cpu_ns - earlier.cpu_ns, self.slices - earlier.slices,
                              self.voluntary - earlier.voluntary, self.involuntary - earlier.involuntary)


def _read_task(task: Path) -> ThreadCounters | None:
    try:
        name = (task / "comm").read_text().strip()
        run_ns, _wait_ns, slices = (int(x) for x in (task / "schedstat").read_text().split()[:3])
        status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
        return ThreadCounters(name, run_ns, slices, int(status["voluntary_ctxt_switches"]),
                              int(status["nonvoluntary_ctxt_switches"]))
    except (OSError, ValueError, KeyError):
        return None   # the thread ended between listing and reading


def sample(pid: int) -> dict[int, ThreadCounters]:
    """The counters of every thread of `pid` now, by thread id."""
    out: dict[int, ThreadCounters] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        counters = _read_task(task)
        if counters is not None:
            out[int(task.name)] = counters
    return out


def by_name(before: dict[int, ThreadCounters], after: dict[int, ThreadCounters]) -> dict[str, ThreadCounters]:
    """What each thread name did between two samples (threads started meanwhile count from zero)."""
    totals: dict[str, ThreadCounters] = {}
    for tid, now in after.items():
        then = before.get(tid)
        delta = now.minus(then) if then is not None and then.name == now.name else now
        old = totals.get(now.name)
        totals[now.name] = delta if old is None else ThreadCounters(
            now.name, old.cpu_ns + delta.cpu_ns, old.slices + delta.slices,
            old.voluntary + delta.voluntary, old.involuntary + delta.involuntary)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1].cpu_ns))


def table(per_name: dict[str, ThreadCounters], seconds: float) -> list[dict[str, float | str]]:
    """Rows for a report: CPU share (% of one core), wake-ups and preemptions per second."""
    total_ns = sum(c.cpu_ns for c in per_name.values()) or 1
    return [{"thread": c.name, "cpu_pct": round(100 * c.cpu_ns / 1e9 / seconds, 3),
             "cpu_share_of_process": round(c.cpu_ns / total_ns, 3),
             "wakeups_per_s": round(c.voluntary / seconds, 1),
             "preempted_per_s": round(c.involuntary / seconds, 1),
             "us_per_wakeup": round(c.cpu_ns / 1e3 / max(c.voluntary + c.involuntary, 1), 1)}
            for c in per_name.values()]
