"""The session's counters: one writer per counter object, one frozen snapshot for readers.

Each thread counts into its own object (the connection thread into `ConnectionCounters`, the
sender into `SenderCounters`, the owner's sends on the main thread into `OwnerCounters`), so no
counter has two writers. Readers never touch those: `SessionClient.counters()` returns a
`SessionCounters` snapshot, built from plain int reads (atomic under the GIL).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConnectionCounters:
    """Written by the connection thread only."""

    connects: int = 0               # attempts
    reconnects: int = 0             # attempts after the first of a call
    sessions: int = 0               # session.created received (also the stream format generation)
    bytes_down: int = 0
    auth_rejections: int = 0
    server_errors: int = 0
    discarded_audio_bytes: int = 0  # agent audio discarded while the downlink gate was closed
    send_errors: int = 0            # session.close sent by the receiver (hung up while connecting)


@dataclass
class SenderCounters:
    """Written by the sender thread only."""

    chunks_sent: int = 0
    bytes_up: int = 0
    commits: int = 0
    stale_chunks: int = 0   # mic chunks (or commits) made for another session than the live one, unsent
    send_errors: int = 0


@dataclass
class OwnerCounters:
    """Written by the owner's thread only (the main thread's sends: session.close, text)."""

    texts_sent: int = 0
    send_errors: int = 0


@dataclass(frozen=True)
class SessionCounters:
    """A snapshot of every session counter (immutable; any thread)."""

    connects: int = 0
    reconnects: int = 0
    sessions: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    chunks_sent: int = 0
    commits: int = 0
    texts_sent: int = 0
    send_errors: int = 0
    auth_rejections: int = 0
    server_errors: int = 0
    discarded_audio_bytes: int = 0
    stale_chunks: int = 0
    malformed: dict[str, int] = field(default_factory=dict)   # per kind, from the decoder
    capture_to_send_ms: dict[str, float | None] = field(default_factory=dict)   # p50, p99

    @classmethod
    def of(cls, connection: ConnectionCounters, sender: SenderCounters, owner: OwnerCounters,
           malformed: dict[str, int], capture_to_send_ms: dict[str, float | None]) -> SessionCounters:
        return cls(
            connects=connection.connects, reconnects=connection.reconnects,
            sessions=connection.sessions, bytes_up=sender.bytes_up, bytes_down=connection.bytes_down,
            chunks_sent=sender.chunks_sent, commits=sender.commits, texts_sent=owner.texts_sent,
            send_errors=connection.send_errors + sender.send_errors + owner.send_errors,
            auth_rejections=connection.auth_rejections, server_errors=connection.server_errors,
            discarded_audio_bytes=connection.discarded_audio_bytes,
            stale_chunks=sender.stale_chunks, malformed=malformed, capture_to_send_ms=capture_to_send_ms)
