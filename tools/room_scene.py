"""One call of the real service with the simulator in a simulated room, faster than real time.

`run_scene` starts the simulator (in this process, over loopback) with a greeting, and the real
`ApplianceService` on a fake audio pair in a `FakeRoom` made from a `RoomCell` (reverberation
time, speaker-to-mic distance, clock drift, speaker distortion, ambient noise, playback volume).
It returns what the mic heard, split into its parts (echo, near-end talker, noise: the room is
simulated, so each is known exactly), what the capture DSP made of it (the service's debug
recording), what left the device (the simulator's copy of the uplink) and what the speaker played.

Pacing (`SceneClock`): real time until the agent's first sound reaches the speaker, so the
connection and the simulator's speech synthesis take no simulated time, then as fast as the CPU
allows with the mic and the speaker in lockstep (`hw.clock.LockstepClock`). The mic stops at the
end of the scene (the capture thread waits inside its read), so every stream ends at the same
sample however long the harness takes to collect them. Used by tools/bench_room.py.
"""
from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from device.service.settings import load_settings
from device.service.supervisor import ApplianceService
from device.sim.server import SimOptions, Simulator
from hw.clock import LockstepClock, LockstepMember
from hw.controls import NoControls
from hw.fake_audio import FakeAudioBackend
from hw.room import FakeRoom
from tools.room_ir import reverberant_ir
from tools.service_process import TEST_KEY
from tools.signals import read_wav

RATE: Final = 16000              # the mic, the DSP and (here) the session rate
BULK_DELAY_MS: Final = 40.0      # sound card and driver latency before the acoustic path
# The direct sound's peak gain with the mic 5 cm from the speaker: a small kiosk at full volume,
# where the echo at the mic is louder than the user (the baseline's 0.5 m: echo at about -34 dBFS
# for agent speech at -20 dBFS, a talker at -26 dBFS; at 5 cm the echo's peaks reach full scale).
ECHO_GAIN_AT_5CM_DB: Final = 3.0
Distortion = Literal["off", "moderate", "strong"]
# Speaker soft-clipping level for each distortion setting (`FakeRoom.speaker_clip_dbfs`). The
# simulator's speech peaks at -2 dBFS (active level -20 dBFS): "moderate" squashes its peaks at
# full volume, "strong" most of its syllables; at lower volumes both distort less, as a speaker does.
CLIP_DBFS: Final[dict[str, float | None]] = {"off": None, "moderate": -12.0, "strong": -20.0}
GREETING: Final = ("Thanks for calling the shop. We are open from nine in the morning to six in the evening, "
                   "Monday to Saturday, and on Sunday from ten to four. You can book a table, check an "
                   "order, or ask about the menu. How can I help you today?")
SHORT_GREETING: Final = "Thanks for calling the shop. We are open from nine to six, Monday to Saturday."


@dataclass(frozen=True)
class RoomCell:
    """One room of the matrix: the physical setting, in the units the settings use."""

    name: str
    rt60_s: float = 0.4
    distance_m: float = 0.5
    drift_ppm: float = 0.0
    distortion: Distortion = "off"
    noise_dbfs: float = -60.0
    volume: int = 100              # the service's volume setting, percent (100 = 0 dB)

    def room(self, seed: int = 0) -> FakeRoom:
        """The fake room of this cell: a pyroomacoustics response at this RT60 and distance, scaled
        so that the direct sound at 5 cm would peak at `ECHO_GAIN_AT_5CM_DB` (farther is quieter)."""
        ir, _ = reverberant_ir(self.rt60_s, self.distance_m, RATE)
        _, near = reverberant_ir(self.rt60_s, 0.05, RATE)
        ir = ir / near.peak * 10 ** (ECHO_GAIN_AT_5CM_DB / 20)
        return RecordingRoom(RATE, delay_ms=BULK_DELAY_MS, gain_db=0.0, impulse_response=ir,
                             drift_ppm=self.drift_ppm, speaker_clip_dbfs=CLIP_DBFS[self.distortion],
                             noise_dbfs=self.noise_dbfs, noise_seed=seed)


class RecordingRoom(FakeRoom):
    """A `FakeRoom` that keeps the echo and the noise it gave the mic (the mic thread), apart."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.echo_parts: list[np.ndarray] = []
        self.noise_parts: list[np.ndarray] = []
        self.mic_cpu_s = 0.0   # CPU the mic thread spent simulating the room (not the product's)

    def mic_echo(self, frames: int) -> np.ndarray:
        t0 = time.thread_time()
        echo = super().mic_echo(frames)
        self.echo_parts.append(echo)
        self.mic_cpu_s += time.thread_time() - t0
        return echo

    def ambient(self, frames: int) -> np.ndarray:
        t0 = time.thread_time()
        noise = super().ambient(frames)
        self.noise_parts.append(noise)
        self.mic_cpu_s += time.thread_time() - t0
        return noise


class SceneClock:
    """Real time until `release()`, then a `LockstepClock` (any thread). Each device's clock is a
    `member()`; times start at 0 when the first member is made, in both phases."""

    # How far the mic and the speaker may drift apart in simulated time. A real full-duplex card
    # alternates its periods; `LockstepClock`'s default 0.1 s lets the reference arrive up to ten
    # periods early or late, which makes the canceller's delay estimate (and the matrix) wander.
    SLACK_S: Final = 0.02

    def __init__(self) -> None:
        self._group = LockstepClock(slack=self.SLACK_S)
        self._released = threading.Event()
        self._t0: float | None = None

    def release(self) -> None:
        self._released.set()

    def member(self) -> SceneClockMember:
        if self._t0 is None:
            self._t0 = time.monotonic()
        return SceneClockMember(self._group.member(), self._released, self._t0)


class SceneClockMember:
    """One device's view of a `SceneClock` (the device's thread)."""

    def __init__(self, member: LockstepMember, released: threading.Event, t0: float) -> None:
        self._member = member
        self._released = released
        self._t0 = t0

    def monotonic(self) -> float:
        return self._member.monotonic()

    def register(self) -> None:
        self._member.register()

    def unregister(self) -> None:
        self._member.unregister()

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        while not self._released.is_set():
            remaining = self._t0 + deadline - time.monotonic()
            if remaining <= 0 or (interrupt is not None and interrupt.is_set()):
                break
            self._released.wait(min(remaining, 0.05))
        return self._member.sleep_until(deadline, interrupt)

    def wait(self, condition: threading.Condition, deadline: float | None) -> bool:
        return self._member.wait(condition, deadline)


class SceneBackend(FakeAudioBackend):
    """The fake pair of a scene: the room, a near-end talker placed relative to the agent's first
    sound, and a mic that stops `tail_s` after the agent's last sound (or at `max_seconds`).

    The playback thread calls `speaker_queued`; the capture thread `next_mic_samples`. The first
    non-silent speaker period releases the `SceneClock` and fixes the agent's start on the mic's
    timeline; `near` is a list of (seconds after that start, PCM16-scale samples)."""

    def __init__(self, room: RecordingRoom, clock: SceneClock, near: list[tuple[float, np.ndarray]],
                 agent_seconds: float, tail_s: float, max_seconds: float = 120.0) -> None:
        super().__init__(clock_factory=clock.member, room=room, keep_history=False)
        self.scene_clock = clock
        self.recording_room = room
        self.near_script = near
        self.agent_seconds = agent_seconds
        self.tail_s = tail_s
        self.max_samples = int(max_seconds * RATE)
        self.mic_samples = 0
        self.agent_start: int | None = None    # mic sample at which the agent's first sound was queued
        self.near_parts: list[np.ndarray] = []
        self.speaker_parts: list[np.ndarray] = []
        self.scene_done = threading.Event()
        self.finish = threading.Event()       # set by the harness: let the mic go on (to stop)

    @property
    def end_sample(self) -> int:
        if self.agent_start is None:
            return self.max_samples
        return min(self.max_samples, self.agent_start + int((self.agent_seconds + self.tail_s) * RATE))

    def speaker_queued(self, pcm: bytes, rate: int) -> None:
        if self.agent_start is None and any(pcm):
            self.agent_start = self.mic_samples
            self.scene_clock.release()
        if self.agent_start is not None and not self.finish.is_set():
            self.speaker_parts.append(np.frombuffer(pcm, "<i2").astype(np.float64))
        super().speaker_queued(pcm, rate)

    def next_mic_samples(self, frames: int, rate: int) -> np.ndarray:
        if self.mic_samples >= self.end_sample and not self.finish.is_set():
            self.scene_done.set()
            self.finish.wait()
        t0 = time.thread_time()
        out = super().next_mic_samples(frames, rate)
        if self.finish.is_set():
            return out
        near = np.zeros(frames)
        if self.agent_start is not None:
            for offset_s, clip in self.near_script:
                first = self.agent_start + int(offset_s * RATE) - self.mic_samples
                lo, hi = max(first, 0), min(first + len(clip), frames)
                if lo < hi:
                    near[lo:hi] += clip[lo - first:hi - first]
        self.near_parts.append(near)
        self.mic_samples += frames
        self.recording_room.mic_cpu_s += time.thread_time() - t0
        return out + near


@dataclass
class SceneRecording:
    """Everything one scene produced, as float arrays in full-scale units (1.0 = PCM16 full scale),
    all at 16 kHz. `echo`, `near`, `noise` and `mic` share the mic's timeline from its first
    sample; `processed` is on it too (the debug recording, aligned at the end); `uplink` is what
    the simulator received; `speaker` what the speaker was given from the agent's start on."""

    cell: RoomCell
    aec: str
    echo: np.ndarray
    near: np.ndarray
    noise: np.ndarray
    processed: np.ndarray
    uplink: np.ndarray
    speaker: np.ndarray
    agent_start: int                 # mic sample of the agent's first sound
    capture_cpu_s: float             # CPU time of the capture thread less the fake mic's room
                                     # simulation: the DSP, resampling, chunking, debug recorder
    dsp_cpu_s: float                 # of which in the per-frame processing call (the capture DSP
                                     # chain and the local VAD that watches its output)
    audio_s: float                   # seconds of audio it captured
    wall_s: float
    duplex_gated_frames: int = 0     # frames the adaptive half-duplex gated (device/audio/duplex.py)
    duplex: dict[str, Any] = field(default_factory=dict)   # its measurements at the end of the call
    log: list[str] = field(default_factory=list)

    @property
    def mic(self) -> np.ndarray:
        return self.echo + self.near + self.noise


class _TimedProcess:
    """Wraps the capture thread's per-frame processing call to add up its CPU time (the capture
    thread). It reaches into `CaptureThread._process`: the one place the call is made, and a
    measurement that must not change the product's code."""

    def __init__(self, capture: object) -> None:
        self.cpu_s = 0.0
        self._inner = capture._process  # type: ignore[attr-defined]
        capture._process = self  # type: ignore[attr-defined]

    def __call__(self, frame: bytes) -> bytes:
        t0 = time.thread_time()
        out: bytes = self._inner(frame)
        self.cpu_s += time.thread_time() - t0
        return out


def _thread_cpu(name: str) -> float:
    for thread in threading.enumerate():
        if thread.name == name and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return float("nan")


def run_scene(cell: RoomCell, aec: str = "webrtc", near: list[tuple[float, np.ndarray]] | None = None,
              greeting: str = GREETING, agent_seconds: float | None = None, tail_s: float = 1.5,
              timeout_s: float = 120.0, **settings: object) -> SceneRecording:
    """Run one call in `cell` with the echo canceller `aec` ("webrtc" | "off"); `near` places a
    near-end talker (seconds after the agent's first sound, samples in PCM16 units); the mic
    stops `tail_s` after `agent_seconds` (the greeting's length). `settings` override the
    service's (names as in config.toml)."""
    from device.sim.voice import synthesize

    if agent_seconds is None:
        agent_seconds = len(synthesize(greeting, RATE, "espeak")) / 2 / RATE
    started = time.monotonic()
    clock = SceneClock()
    room = cell.room()
    assert isinstance(room, RecordingRoom)
    backend = SceneBackend(room, clock, near or [], agent_seconds, tail_s)
    sim = Simulator(SimOptions(api_key=TEST_KEY, port=0, greeting=greeting, tts="espeak",
                               vad_threshold_dbfs=0.0,       # never barge in: the agent says all of it
                               realtime_factor=1000.0, keep_audio_seconds=600.0))
    sim.start()
    with tempfile.TemporaryDirectory(prefix="atoms-room-") as tmp_name:
        tmp = Path(tmp_name)
        config: dict[str, Any] = {
            "api_key": TEST_KEY, "agent_id": "sim-agent", "url": sim.url, "audio_backend": "fake",
            "gpio_backend": "none", "control_socket": tmp / "control.sock", "state_dir": tmp / "state",
            "earcons": False, "call_mode": "always", "aec": aec, "sample_rate": RATE, "volume": cell.volume,
            "debug_record_dir": tmp / "debug", "debug_record_seconds": 600.0, "log_level": "WARNING",
            **settings}
        service = ApplianceService(load_settings(None, **config), backend=backend, controls=NoControls(),
                                   install_signals=False)
        dsp_timer = _TimedProcess(service.pipeline.capture)
        thread = threading.Thread(target=service.run, name="room-scene-service", daemon=True)
        thread.start()
        try:
            if not backend.scene_done.wait(timeout_s):
                raise TimeoutError(f"{cell.name}: the scene did not end within {timeout_s:g} s "
                                   f"(agent start {backend.agent_start})")
            cpu = _thread_cpu("audio-capture") - room.mic_cpu_s
            _wait_uplink_settled(sim)
            assert service.recorder is not None
            service.recorder.dump(tmp / "debug", reason="room scene")
            gated = int(service.dsp.stats().get("duplex_gated_frames", 0))
            duplex = _duplex_measurements(service)
            processed, _ = read_wav(tmp / "debug" / "mic-processed.wav")
            sessions = list(sim.recorder.audio_bytes_by_session)
            uplink = np.frombuffer(sim.recorder.audio_of(sessions[-1]), "<i2") if sessions else np.zeros(0)
        finally:
            backend.finish.set()
            service.request_stop()
            thread.join(15)
            sim.stop()
    n = backend.mic_samples
    full = 32768.0
    echo = np.concatenate(room.echo_parts)[:n] / full
    noise = (np.concatenate(room.noise_parts)[:n] if room.noise_parts else np.zeros(n)) / full
    near_sig = np.concatenate(backend.near_parts)[:n] / full
    proc = np.zeros(n)
    p = processed.astype(np.float64)[-n:] / full
    proc[n - len(p):] = p
    assert backend.agent_start is not None
    return SceneRecording(cell=cell, aec=aec, echo=echo, near=near_sig, noise=noise, processed=proc,
                          uplink=uplink.astype(np.float64) / full,
                          speaker=np.concatenate(backend.speaker_parts) / full if backend.speaker_parts else np.zeros(0),
                          agent_start=backend.agent_start, capture_cpu_s=cpu, dsp_cpu_s=dsp_timer.cpu_s,
                          audio_s=n / RATE,
                          wall_s=time.monotonic() - started, duplex_gated_frames=gated, duplex=duplex)


def _duplex_measurements(service: ApplianceService) -> dict[str, Any]:
    """What the adaptive half-duplex measured in the call (empty without echo control)."""
    control = getattr(service.dsp, "echo_control", None)
    if control is None:
        return {}
    stats = control.stats()
    return {"mode": control.decided_mode, "residual_echo_db": control.residual_echo_db,
            "echo_reduction_db": control.echo_reduction_db, "switches": stats["duplex_switches"],
            "double_talk_frames": stats["double_talk_frames"],
            "echo_reduction_after_ns_db": control.echo_reduction_after_ns_db,
            "residual_attenuation_db": control.residual_attenuation_db,
            "residual_gated_frames": stats["residual_gated_frames"]}


def _wait_uplink_settled(sim: Simulator, quiet_s: float = 0.3, timeout_s: float = 5.0) -> None:
    """Wait until the simulator has received no audio for `quiet_s` (the last chunks in flight)."""
    deadline = time.monotonic() + timeout_s
    last, since = sim.recorder.audio_bytes_received, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = sim.recorder.audio_bytes_received
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
