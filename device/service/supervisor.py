"""The service supervisor: the main thread runs the state machine and carries out its actions.

Everything else only enqueues events here: buttons (gpiozero's thread), the control socket, the
session client's connection thread, the audio threads (hardware lost/back) and signal handlers.
Debug recordings (SIGUSR1, `ctl dump-audio`, a lost device) are enqueued to the dumper's thread
instead: they are file I/O, not state.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from device.audio.buffers import JitterBuffer, UplinkQueue
from device.audio.dsp import make_capture_dsp
from device.audio.formats import FRAME_MS, UPLINK_CHUNK_MS, bytes_for_seconds
from device.audio.pipeline import AudioPipeline
from device.core import state_machine
from device.core.events import (
    Action,
    CallState,
    Connect,
    Disconnect,
    Event,
    FlushPlayback,
    HardwareLost,
    MachineConfig,
    MachineState,
    PersistMute,
    PlayEarcon,
    Reload,
    SendCommit,
    SessionStarted,
    SetDownlinkGate,
    SetMicGate,
    ShowLeds,
    Shutdown,
    StopService,
)
from device.service.control import DUMP_AUDIO_TIMEOUT, ControlServer
from device.service.persist import PersistentState
from device.service.sdnotify import SystemdNotifier
from device.service.settings import Settings
from device.service.startup import StartupClock
from device.service.stats import rss_mb, write_json_atomic
from device.session.client import SessionClient
from device.session.config import SessionConfig
from hw.audio import AudioBackend
from hw.clock import Clock, RealClock
from hw.controls import Controls, LedState
from hw.errors import DeviceUnavailable
from hw.registry import audio_backend_from_settings, controls_backend, controls_from_settings

if TYPE_CHECKING:
    from device.diagnostics.dumper import DebugDumper
    from device.diagnostics.recorder import DebugRecorder

log = logging.getLogger(__name__)

TICK: Final = 0.25
MAX_PENDING_EVENTS: Final = 1000
WATCHDOG_STALE: Final = 5.0  # an audio thread without progress for this long is stuck


def session_config(settings: Settings) -> SessionConfig:
    assert settings.api_key is not None
    return SessionConfig(
        url=settings.url, api_key=settings.api_key.get_secret_value(), agent_id=settings.agent_id,
        sample_rate=settings.sample_rate, variables=dict(settings.variables), auth=settings.auth,
        connect_timeout=settings.connect_timeout, ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout, backoff_initial=settings.backoff_initial,
        backoff_max=settings.backoff_max, max_message_bytes=settings.max_message_bytes)


class ApplianceService:
    """The running appliance. `run()` on the main thread; `post()` from any thread.

    `observer(kind, data)` (optional) is told of state changes ("state"), transcripts
    ("transcript") and events ("event"), on the main thread; the demo prints them.
    """

    def __init__(
        self,
        settings: Settings,
        backend: AudioBackend | None = None,
        controls: Controls | None = None,
        clock: Clock | None = None,
        observer: Callable[[str, dict[str, Any]], None] | None = None,
        install_signals: bool = True,
        notifier: SystemdNotifier | None = None,
        watchdog_stale: float = WATCHDOG_STALE,
        startup: StartupClock | None = None,
    ) -> None:
        settings.require_agent()
        self.startup = startup or StartupClock()
        self.settings = settings
        self.clock = clock or RealClock()
        self.observer = observer
        self.install_signals = install_signals
        self.notifier = notifier or SystemdNotifier()
        self.watchdog_interval = self.notifier.watchdog_interval()
        self.watchdog_stale = watchdog_stale
        self._next_watchdog = 0.0
        self.watchdog_withheld = 0
        self.config = MachineConfig(mode=settings.call_mode, half_duplex=settings.half_duplex,
                                    earcons=settings.earcons)
        self.persist = PersistentState(settings.state_dir)
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # put() is reentrant: signal-safe
        self.dropped_events = 0
        # The one injection point: the backends the settings name (hw.registry), unless a test
        # hands in ready-made ones.
        self.backend = backend or audio_backend_from_settings(settings)
        self.startup.mark("audio backend")
        # No GPIO (a chip the service may not open, a pin taken by an overlay, a board gpiozero
        # refuses) must not take the audio and the control socket down with it: run without
        # buttons and LEDs, with the fault in the status, the log and the state (an error chime).
        self.gpio_fault: str | None = None
        if controls is None:
            try:
                controls = controls_from_settings(settings)
            except DeviceUnavailable as exc:
                self.gpio_fault = str(exc)
                log.error("GPIO unavailable, running without buttons and LEDs (ctl and the audio work): %s; "
                          "`atoms-appliance doctor` says how to fix it", exc)
                controls = controls_backend("none")
        self.controls = controls
        self.startup.mark("controls (GPIO)")
        self._devices = self._describe_devices()
        self.uplink = UplinkQueue(max(1, settings.uplink_queue_ms // UPLINK_CHUNK_MS))
        rate = settings.sample_rate
        self.jitter = JitterBuffer(bytes_for_seconds(rate, settings.jitter_buffer_seconds))
        self.recorder: DebugRecorder | None = None
        self.dumper: DebugDumper | None = None
        self.ignored_dump_signals = 0   # SIGUSR1 with recording off (the handler only counts)
        self._warned_dump_signals = 0
        if settings.debug_record_dir is not None:
            # Imported only when recording is on: nothing else needs it before READY.
            from device.diagnostics.dumper import DebugDumper
            from device.diagnostics.recorder import DebugRecorder

            self.recorder = DebugRecorder(settings.debug_record_dir, settings.debug_record_seconds)
            self.dumper = DebugDumper(self.recorder, self.clock)
        self.dsp = make_capture_dsp(settings.aec, settings.noise_suppression, settings.auto_gain_dbfs,
                                    recorder=self.recorder)
        self.startup.mark("DSP (echo canceller, noise suppression)")
        self.pipeline = AudioPipeline(self.backend, self.dsp, self.uplink, self.jitter, self.post,
                                      session_rate=rate, period_ms=settings.period_ms,
                                      buffer_periods=settings.playback_buffer_periods, clock=self.clock,
                                      jitter_seconds=settings.jitter_buffer_seconds)
        self.session = SessionClient(session_config(settings), self.uplink, self._session_event,
                                     self.jitter.push, self._transcript, clock=self.clock)
        self.control = ControlServer(settings.control_socket, self.post, self.status, self.dump_audio)
        self.state = MachineState()
        self.leds = LedState()
        self.transcripts: list[tuple[str, str]] = []
        self._status: dict[str, Any] = {}
        self._stop = threading.Event()
        self._next_stats = 0.0
        self.started_at = time.monotonic()

    # -- any thread ----------------------------------------------------------------------------
    def post(self, event: Event) -> None:
        """Enqueue an event for the main thread (callbacks call only this)."""
        if self.events.qsize() >= MAX_PENDING_EVENTS:
            self.dropped_events += 1
            return
        self.events.put(event)

    def _session_event(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            # Before the first delta of the new session reaches the jitter buffer.
            self.pipeline.set_stream_format(event.format)
        self.post(event)

    def _transcript(self, role: str, text: str) -> None:
        log.info("transcript %s: %s", role, text[:500])
        self.post_observer("transcript", {"role": role, "text": text})

    def post_observer(self, kind: str, data: dict[str, Any]) -> None:
        if self.observer is not None:
            try:
                self.observer(kind, data)
            except Exception:
                log.exception("observer failed")

    def status(self) -> dict[str, Any]:
        """The last published status snapshot (any thread; never contains the key)."""
        return self._status

    def request_stop(self) -> None:
        self.post(Shutdown())

    def dump_audio(self) -> dict[str, Any]:
        """`ctl dump-audio` (the control thread): write the debug recording now, wait for it and
        reply with the files; an error reply when recording is off or the dump fails."""
        if self.dumper is None:
            return {"ok": False, "error": "debug recording is off: set ATOMS_DEBUG_RECORD_DIR (or "
                    "debug_record_dir in config.toml) to a writable directory and restart the service"}
        directory = self.dumper.recorder.directory
        try:
            files = self.dumper.request("ctl dump-audio").result(DUMP_AUDIO_TIMEOUT)
        except TimeoutError:
            return {"ok": False, "error": f"the dump did not finish within {DUMP_AUDIO_TIMEOUT:g} s; "
                    "it goes on, see the log"}
        except CancelledError:
            return {"ok": False, "error": "the service is stopping"}
        except Exception as exc:  # noqa: BLE001 - logged by the dumper; the control thread must go on
            return {"ok": False, "error": f"cannot write the debug recording to {directory}: {exc}"}
        return {"ok": True, "cmd": "dump_audio", "directory": str(directory),
                "files": [f.as_dict() for f in files]}

    def _on_dump_signal(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: only enqueue (SimpleQueue.put is reentrant) or count, never write files.
        if self.dumper is not None:
            self.dumper.request(signal.Signals(signum).name)
        else:
            self.ignored_dump_signals += 1   # warned about by the main loop (`_tick`)

    # -- main thread ------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.post(Shutdown()))
        signal.signal(signal.SIGINT, lambda *_: self.post(Shutdown()))
        signal.signal(signal.SIGHUP, lambda *_: self.post(Reload()))
        # Installed even with recording off: SIGUSR1's default action would kill the service.
        signal.signal(signal.SIGUSR1, self._on_dump_signal)

    def start(self) -> None:
        """Bring up audio, the control socket and the controls (no network needed for any)."""
        if self.install_signals and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        self.startup.mark("pipeline and client objects")
        self.control.bind()
        if self.dumper is not None:
            self.dumper.start()
        self.pipeline.start()
        self.session.start()
        self.control.start()
        self.controls.start(self.post)
        self.startup.mark("threads")
        transition = state_machine.boot(self.config, self.persist.load_muted())
        self._apply(transition.state, transition.actions)
        if self.gpio_fault is not None:
            self.handle(HardwareLost("gpio", self.gpio_fault))
        # READY once audio and controls are up, not when the cloud answers: buttons and LEDs
        # must work with no network.
        self.notifier.ready()
        self.notifier.status(self._status_text())
        log.info("ready: %s mode, control socket %s; %s", self.config.mode.value, self.settings.control_socket,
                 self.startup.summary())

    def run(self) -> int:
        """Start, then process events until shutdown. Returns the exit status."""
        self.start()
        try:
            while not self._stop.is_set():
                try:
                    event = self.events.get(timeout=TICK)
                except queue.Empty:
                    event = None
                if event is not None:
                    self.handle(event)
                self._tick()
        finally:
            self.shutdown()
        return 0

    def handle(self, event: Event) -> None:
        self.post_observer("event", {"event": type(event).__name__})
        had_faults = bool(self.state.hardware_faults)
        transition = state_machine.step(self.config, self.state, event)
        self._apply(transition.state, transition.actions)
        if (isinstance(event, HardwareLost) and self.dumper is not None and not had_faults
                and self.state.hardware_faults):
            # The first lost device of an outage (until all are back): keep the audio leading up to it.
            self.dumper.request_outage(event.device)

    def _apply(self, new_state: MachineState, actions: tuple[Action, ...]) -> None:
        old = self.state
        self.state = new_state
        if (old.call, old.muted, old.agent_speaking, old.talking) != \
                (new_state.call, new_state.muted, new_state.agent_speaking, new_state.talking):
            log.info("state %s%s%s%s", new_state.call.value, " muted" if new_state.muted else "",
                     " agent-speaking" if new_state.agent_speaking else "", " talking" if new_state.talking else "")
            self.notifier.status(self._status_text())
            self.post_observer("state", {"call": new_state.call.value, "muted": new_state.muted,
                                         "agent_speaking": new_state.agent_speaking,
                                         "talking": new_state.talking})
        for action in actions:
            self._do(action)
        self._publish_status()

    def _do(self, action: Action) -> None:
        if isinstance(action, SetMicGate):
            # Discard unsent audio when the gate closes for privacy or the call ends; keep it
            # when a push-to-talk turn ends (its commit is queued right behind it).
            self.pipeline.set_mic_gate(action.open, discard_queued=self.state.muted or self.state.call != CallState.IN_CALL)
        elif isinstance(action, Connect):
            self.session.connect()
        elif isinstance(action, Disconnect):
            self.session.disconnect()
        elif isinstance(action, SetDownlinkGate):
            self.session.downlink_open = action.open
        elif isinstance(action, SendCommit):
            self.session.send_commit()
        elif isinstance(action, FlushPlayback):
            self.pipeline.flush()
        elif isinstance(action, ShowLeds):
            if action.leds != self.leds:
                self.leds = action.leds
                self.controls.show(action.leds)
        elif isinstance(action, PlayEarcon):
            if self.settings.earcons:
                self.pipeline.play_earcon(action.name)
        elif isinstance(action, PersistMute):
            self.persist.save_muted(action.muted)
        elif isinstance(action, StopService):
            self._stop.set()

    def _describe_devices(self) -> dict[str, Any]:
        """What the service holds, for `ctl status` and `doctor` (which cannot open them while we run)."""
        s = self.settings
        pins = dict(getattr(self.controls, "pins", {}))
        factory = getattr(self.controls, "factory", None)
        gpio = {"backend": s.gpio_backend, "factory": type(factory).__name__ if factory is not None else None,
                "pins": pins, "fault": self.gpio_fault}
        return {"backend": s.audio_backend, "microphone": s.capture_device, "speaker": s.playback_device,
                "gpio": gpio}

    def _status_text(self) -> str:
        s = self.state
        flags = [f for f, on in (("muted", s.muted), ("agent speaking", s.agent_speaking),
                                 ("talking", s.talking)) if on]
        faults = [f"{d} lost" for d in sorted(s.hardware_faults)]
        return ", ".join([s.call.value.replace("_", " "), *flags, *faults])

    def _tick(self) -> None:
        now = time.monotonic()
        self._publish_status()  # counters in `ctl status` stay current during a steady call
        if self.ignored_dump_signals != self._warned_dump_signals:
            self._warned_dump_signals = self.ignored_dump_signals
            log.warning("SIGUSR1: debug recording is off, nothing to write; set ATOMS_DEBUG_RECORD_DIR "
                        "(or debug_record_dir in config.toml) and restart the service")
        if self.watchdog_interval is not None and now >= self._next_watchdog:
            self._next_watchdog = now + self.watchdog_interval
            # Vouch for the device only while the audio threads make progress: a stuck capture or
            # playback thread lets systemd's watchdog fire and restart the service.
            if self.pipeline.healthy(now, self.watchdog_stale):
                self.notifier.watchdog()
            else:
                self.watchdog_withheld += 1
                if self.watchdog_withheld == 1:
                    log.error("an audio thread is stuck or dead; withholding the watchdog ping")
        if self.settings.stats_file is not None and now >= self._next_stats:
            self._next_stats = now + self.settings.stats_interval
            self.write_stats()

    def _publish_status(self) -> None:
        s, c = self.state, self.session
        self._status = {
            "call_state": s.call.value, "muted": s.muted, "agent_speaking": s.agent_speaking,
            "talking": s.talking, "call_mode": self.config.mode.value,
            "hardware_faults": sorted(s.hardware_faults), "session_id": c.session_id,
            "call_id": c.call_id, "link": c.state.value, "sample_rate": self.pipeline.stream_format.rate,
            "last_error": s.last_error or c.last_error,
            "leds": {"status": self.leds.status.value, "mute": self.leds.mute,
                     "speaking": self.leds.speaking, "indicator": self.leds.indicator.value},
            "devices": self._devices, "pid": os.getpid(),
            "counters": self.counters(),
        }

    def counters(self) -> dict[str, Any]:
        c = self.session.counters()
        return {
            **self.pipeline.counters(),
            "chunks_sent": c.chunks_sent,
            "uplink_dropped_chunks": self.uplink.dropped_chunks,
            "bytes_up": c.bytes_up, "bytes_down": c.bytes_down,
            "connects": c.connects, "reconnects": c.reconnects, "sessions": c.sessions,
            "send_errors": c.send_errors, "auth_rejections": c.auth_rejections,
            "server_errors": c.server_errors, "stale_chunks": c.stale_chunks,
            "outage_recordings_skipped": self.dumper.skipped_outages if self.dumper is not None else 0,
            "malformed": c.malformed,
            "jitter_overflow_bytes": self.jitter.overflow_bytes,
            "discarded_agent_bytes": c.discarded_audio_bytes,
            "dropped_events": self.dropped_events,
        }

    def stats(self) -> dict[str, Any]:
        counters = self.counters()
        latency = self.session.counters().capture_to_send_ms
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "call_state": self.state.call.value,
            "frames_captured": counters["frames_captured"],
            "frames_sent": counters["chunks_sent"] * (UPLINK_CHUNK_MS // FRAME_MS),
            "frames_dropped": counters["uplink_dropped_chunks"] * (UPLINK_CHUNK_MS // FRAME_MS),
            "bytes_up": counters["bytes_up"], "bytes_down": counters["bytes_down"],
            "reconnects": counters["reconnects"], "malformed": counters["malformed"],
            "underruns": counters["playback_underruns"], "overruns": counters["capture_overruns"],
            "capture_to_send_ms": latency,
            "interruption_to_silence_ms": self.pipeline.flush_latency.percentiles_ms(0.5, 0.99),
            "rss_mb": rss_mb(), "counters": counters,
        }

    def write_stats(self) -> None:
        if self.settings.stats_file is None:
            return
        try:
            write_json_atomic(self.settings.stats_file, self.stats())
        except OSError as exc:
            log.error("cannot write stats to %s: %s", self.settings.stats_file, exc)

    def shutdown(self) -> None:
        """Stop everything in order; idempotent. A call still up gets its `session.close`."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        self.notifier.stopping()
        if self.session.live:
            self.session.disconnect()
            self.session.wait_closed(1.5)
        self.session.stop()
        self.control.stop()
        if self.dumper is not None:
            self.dumper.stop()   # before joining the control thread, which may wait for a dump
        self.pipeline.stop()
        self.session.join()
        self.control.join()
        if self.dumper is not None:
            self.dumper.join()
        self.pipeline.join()
        try:
            self.controls.show(LedState())
            self.controls.close()
        except Exception:
            log.exception("closing the controls failed")
        self.dsp.close()
        self.backend.close()
        if self.recorder is not None:
            try:
                self.recorder.dump(reason="exit")
            except OSError as exc:   # a full or read-only disk must not skip the stats and the exit
                log.error("cannot write the debug recording to %s: %s", self.recorder.directory, exc)
        self.write_stats()
        self.notifier.close()
        log.info("stopped")

