"""The simulator's options: one dataclass for the programmatic API and the argparse flags for the CLI.

Every CLI flag maps to exactly one `SimOptions` field (dashes become underscores), so a test
that runs the simulator in-process and one that runs `atoms-appliance sim` as a subprocess
configure the same behaviour with the same names.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Final, Literal

CONNECT_PATH: Final = "/atoms/v1/agent/connect"
DEFAULT_RATE: Final = 24000
DEFAULT_REPLY: Final = "Hello, this is the Atoms simulator. How can I help you today?"
TtsEngine = Literal["auto", "espeak", "tone"]


@dataclass(frozen=True)
class SimOptions:
    """Everything that shapes the simulator's behaviour (immutable; safe to share between threads).

    Fault counts are per connection index: `reject_count` counts HTTP upgrade attempts, while
    `drop_count` and `close_count` count accepted sessions, so "reject 2, then drop the first
    accepted session" is expressible. `None` counts mean "every one"; 0 means "none".
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = "sim-key"
    agent_id: str = "sim-agent"
    # Negotiation and replies
    force_rate: int | None = None
    reply: str = DEFAULT_REPLY
    greeting: str | None = None
    tts: TtsEngine = "auto"
    # Energy VAD (on the client's audio, in stream time, so tests may send faster than real time)
    vad_threshold_dbfs: float = -40.0
    vad_min_speech_ms: int = 200
    vad_min_silence_ms: int = 550
    # Agent audio pacing: `realtime_factor` > 1 plays faster than real time (tests)
    chunk_ms: int = 40
    lead_ms: int = 200
    realtime_factor: float = 1.0
    # Faults
    reject_status: int | None = None
    reject_count: int | None = None
    retry_after: int | None = None
    drop_after: float | None = None
    drop_count: int | None = 1
    close_code: int | None = None
    close_after: float | None = None
    close_count: int | None = 1
    garbage: bool = False
    session_timeout: float | None = None
    stop_reading: bool = False
    flood_seconds: float | None = None
    created_delay: float = 0.0  # a slow server: accept the upgrade, send session.created this much later
    # Recording
    events_file: str | None = None
    keep_audio_seconds: float = 0.0  # keep the first N seconds of each session's audio (`audio_of`)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} out of range 0-65535")
        if self.force_rate is not None and self.force_rate <= 0:
            problems.append("force_rate must be a positive sample rate")
        if self.tts not in ("auto", "espeak", "tone"):
            problems.append(f"tts must be auto, espeak or tone, not {self.tts!r}")
        if self.vad_min_speech_ms <= 0 or self.vad_min_silence_ms <= 0:
            problems.append("vad_min_speech_ms and vad_min_silence_ms must be positive")
        if not 10 <= self.chunk_ms <= 1000:
            problems.append("chunk_ms must be within 10-1000")
        if self.lead_ms < 0:
            problems.append("lead_ms must not be negative")
        if self.realtime_factor <= 0:
            problems.append("realtime_factor must be positive")
        if self.reject_status is not None and not 400 <= self.reject_status <= 599:
            problems.append("reject_status must be an HTTP error status (400-599)")
        if self.close_code is not None and not (1000 <= self.close_code <= 1014 or
                                                3000 <= self.close_code <= 4999):
            problems.append("close_code must be a WebSocket close code (1000-1014 or 3000-4999)")
        for name in ("reject_count", "drop_count", "close_count", "retry_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must not be negative")
        for name in ("drop_after", "close_after", "session_timeout", "flood_seconds", "created_delay",
                     "keep_audio_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must not be negative")
        if problems:
            raise ValueError("invalid simulator options: " + "; ".join(problems))

    @property
    def close_fault(self) -> tuple[int, float] | None:
        """(code, delay) when a close fault is configured: either flag alone implies the other."""
        if self.close_code is None and self.close_after is None:
            return None
        return (self.close_code if self.close_code is not None else 1000,
                self.close_after if self.close_after is not None else 0.0)


def build_parser(prog: str = "atoms-appliance sim") -> argparse.ArgumentParser:
    """The CLI for `atoms-appliance sim`; flag names mirror the `SimOptions` fields."""
    d = SimOptions()
    p = argparse.ArgumentParser(prog=prog, description="Local stand-in for the Atoms agent WebSocket.")
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port; 0 picks a free one (default 0)")
    p.add_argument("--api-key", default=d.api_key, help="the key clients must present")
    p.add_argument("--agent-id", default=d.agent_id, help="the agent_id clients must ask for")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="stderr log level")
    p.add_argument("--events-file", default=None, metavar="PATH",
                   help="append every recorded event to PATH as JSON lines")
    p.add_argument("--keep-audio-seconds", type=float, default=d.keep_audio_seconds, metavar="S",
                   help="keep the first S seconds of each session's uplink audio (tests read it)")

    g = p.add_argument_group("conversation")
    g.add_argument("--force-rate", type=int, default=None, metavar="HZ",
                   help="answer session.created with this rate whatever the client asked for")
    g.add_argument("--reply", default=d.reply, metavar="TEXT", help="what the agent says every turn")
    g.add_argument("--greeting", default=None, metavar="TEXT", help="speak this right after session.created")
    g.add_argument("--tts", default=d.tts, choices=("auto", "espeak", "tone"),
                   help="voice: espeak-ng, a tone sequence, or espeak-ng when installed (default)")
    g.add_argument("--vad-threshold-dbfs", type=float, default=d.vad_threshold_dbfs, metavar="DB")
    g.add_argument("--vad-min-speech-ms", type=int, default=d.vad_min_speech_ms, metavar="MS")
    g.add_argument("--vad-min-silence-ms", type=int, default=d.vad_min_silence_ms, metavar="MS")
    g.add_argument("--chunk-ms", type=int, default=d.chunk_ms, metavar="MS",
                   help="duration of each output_audio.delta")
    g.add_argument("--lead-ms", type=int, default=d.lead_ms, metavar="MS",
                   help="how far agent audio may run ahead of the wall clock")
    g.add_argument("--realtime-factor", type=float, default=d.realtime_factor, metavar="X",
                   help="pace agent audio X times faster than real time")

    f = p.add_argument_group("faults")
    f.add_argument("--reject-status", type=int, choices=(400, 401, 403, 429, 500, 503), default=None,
                   help="refuse the HTTP upgrade with this status")
    f.add_argument("--reject-count", type=int, default=None, metavar="N",
                   help="refuse only the first N attempts (default: all)")
    f.add_argument("--retry-after", type=int, default=None, metavar="SECONDS",
                   help="Retry-After header on a 503 refusal")
    f.add_argument("--drop-after", type=float, default=None, metavar="SECONDS",
                   help="abort the TCP connection (no close frame) this long after session.created")
    f.add_argument("--drop-count", type=int, default=d.drop_count, metavar="N",
                   help="how many sessions get dropped (default %(default)s)")
    f.add_argument("--close-code", type=int, default=None, metavar="CODE",
                   help="close the WebSocket with CODE (e.g. 4401, 4403, 1011)")
    f.add_argument("--close-after", type=float, default=None, metavar="SECONDS",
                   help="delay before --close-code (default 0)")
    f.add_argument("--close-count", type=int, default=d.close_count, metavar="N",
                   help="how many sessions get closed (default %(default)s)")
    f.add_argument("--garbage", action="store_true", help="send one of each kind of malformed frame")
    f.add_argument("--session-timeout", type=float, default=None, metavar="SECONDS",
                   help="end every session with session.closed reason=timeout after this long")
    f.add_argument("--stop-reading", action="store_true",
                   help="never read from the socket after session.created")
    f.add_argument("--created-delay", type=float, default=d.created_delay, metavar="SECONDS",
                   help="send session.created this long after accepting the upgrade (a slow server)")
    f.add_argument("--flood-seconds", type=float, default=None, metavar="S",
                   help="answer the first utterance with S seconds of audio sent as fast as possible")
    return p


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """Build `SimOptions` from parsed CLI arguments (ignores CLI-only ones such as --log-level)."""
    names = {f.name for f in dataclasses.fields(SimOptions)}
    return SimOptions(**{k: v for k, v in vars(args).items() if k in names})
