"""Fault injection: which connection gets which fault, and the malformed frames `--garbage` sends.

A client must survive each of these without crashing; the tests of the session client and of the
protocol decoder use them through the simulator.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from device.sim.options import SimOptions

OVERSIZED_BYTES: Final = 2 * 1024 * 1024

GARBAGE_KINDS: Final = (
    "invalid_json",
    "json_array",
    "unknown_type",
    "session_created_missing_fields",
    "audio_bad_base64",
    "audio_odd_length",
    "binary_frame",
    "oversized",
)


def garbage_frames() -> list[tuple[str, str | bytes]]:
    """One frame of each malformed kind, as (kind, frame); `bytes` frames go out as binary."""
    return [
        ("invalid_json", '{"type": "transcript", "role": "agent", "text": '),
        ("json_array", json.dumps([{"type": "transcript", "role": "agent", "text": "in an array"}])),
        ("unknown_type", json.dumps({"type": "sim.no_such_event", "detail": "garbage"})),
        ("session_created_missing_fields", json.dumps({"type": "session.created"})),
        ("audio_bad_base64", json.dumps({"type": "output_audio.delta", "audio": "!!not*base64!!"})),
        # "AAAA" decodes to 3 bytes: one and a half PCM16 samples.
        ("audio_odd_length", json.dumps({"type": "output_audio.delta", "audio": "AAAA"})),
        ("binary_frame", b"\x00\x01binary garbage\xff"),
        ("oversized", json.dumps({"type": "transcript", "role": "agent",
                                  "text": "x" * OVERSIZED_BYTES})),
    ]


def _applies(index: int, count: int | None) -> bool:
    return count is None or index < count


@dataclass(frozen=True)
class FaultPlan:
    """Decides the faults for one attempt or session from its index (0-based, per simulator).

    Pure and immutable: the event loop asks it, nothing else holds state.
    """

    options: SimOptions

    def reject_status(self, attempt: int) -> int | None:
        """HTTP status to refuse upgrade attempt number `attempt` with, or None to go on."""
        status = self.options.reject_status
        if status is None or not _applies(attempt, self.options.reject_count):
            return None
        return status

    def drop_after(self, session: int) -> float | None:
        if self.options.drop_after is None or not _applies(session, self.options.drop_count):
            return None
        return self.options.drop_after

    def close_after(self, session: int) -> tuple[int, float] | None:
        fault = self.options.close_fault
        if fault is None or not _applies(session, self.options.close_count):
            return None
        return fault
