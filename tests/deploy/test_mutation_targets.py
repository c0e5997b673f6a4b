"""The system test's mutations (tests/system/test_90_mutations.py) still hit the code they break.

They run only in the opt-in mutation run (~30 minutes in a VM), where a stale target shows up as an
error in the guest after the code moved on (the mute check moved from state_machine.py to
outputs.py, and the capture thread's reopen was no longer the only way back). Here, on every
`make test`: each `old` is in its module exactly `count` times, and the replacement still parses.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.system.test_90_mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
CODE_MUTATIONS = [m for m in MUTATIONS if m.module is not None]


@pytest.mark.parametrize("mutation", CODE_MUTATIONS, ids=str)
def test_each_code_mutation_finds_its_target(mutation: Mutation) -> None:
    assert mutation.module is not None
    source = (ROOT / mutation.module).read_text()
    assert source.count(mutation.old) == mutation.count, (
        f"{mutation.family}: {mutation.old!r} is in {mutation.module} {source.count(mutation.old)} times, "
        f"not {mutation.count}: the mutation no longer breaks what its scenario checks")
    ast.parse(source.replace(mutation.old, mutation.new))   # the broken product still imports


def test_every_scenario_family_has_a_mutation() -> None:
    families = [m.family for m in MUTATIONS]
    assert len(families) == len(set(families))
    assert {"start-ready", "security", "button", "speech", "leds", "mute", "stop", "kill-9", "watchdog",
            "sound-card", "network", "power-cut", "reboot", "ctl-access", "doctor"} <= set(families)


def test_the_sound_card_mutation_keeps_a_lost_device_closed_without_crashing_the_thread() -> None:
    """The reopen mutation must leave the thread retrying forever (alive and beating, so the audio
    watch does not restart it), not raise: a thread that dies is restarted, and recovers."""
    import threading
    import types

    mutation = next(m for m in MUTATIONS if m.family == "sound-card")
    assert mutation.module is not None
    module = types.ModuleType("mutated_reopen")
    source = (ROOT / mutation.module).read_text().replace(mutation.old, mutation.new)
    exec(compile(source, mutation.module, "exec"), module.__dict__)   # noqa: S102 - our own source

    class Thread:
        def __init__(self) -> None:
            self.stopping = threading.Event()
            self.beats = 0

        def beat(self) -> None:
            self.beats += 1
            if self.beats == 5:
                self.stopping.set()

    class Clock:
        def monotonic(self) -> float:
            return 0.0

        def sleep_until(self, deadline: float, stop: threading.Event) -> None:
            pass

    thread = Thread()
    events: list[object] = []
    opened = module.open_with_retry(thread, "capture", lambda: "device", events.append, Clock(), lost=True)
    assert opened is None and thread.beats == 5, "a lost device must never be opened again"
    fresh = module.open_with_retry(Thread(), "capture", lambda: "device", events.append, Clock())
    assert fresh == "device", "the first open still works: the service must start"
