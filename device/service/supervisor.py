"""The service supervisor: the main thread runs the state machine and carries out its actions.

Everything else only enqueues events here: buttons (gpiozero's thread), the control socket, the
session client's connection thread, the audio threads (hardware lost/back) and signal handlers.
Debug recordings (SIGUSR1, `ctl dump-audio`, a lost device) are enqueued to the dumper's thread
instead: they are file I/O, not state.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from device.audio.buffers import JitterBuffer, UplinkQueue
from device.audio.dsp import make_capture_dsp
from device.audio.formats import UPLINK_CHUNK_MS, bytes_for_seconds
from device.audio.pipeline import AudioPipeline
from device.audio.vad import SpeechDetector
from device.core import state_machine
from device.core.events import (
    Action,
    Activity,
    CallEnded,
    CallState,
    CancelTimer,
    Command,
    Connect,
    Disconnect,
    Event,
    FlushPlayback,
    HardwareBack,
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
    StartTimer,
    StopService,
    TimerExpired,
    VolumeCommand,
    WakeWordDetected,
)
from device.service import event_schema as schema
from device.service import report
from device.service.audio_watch import RESTART_INITIAL, AudioThreadWatch, WatchedThread
from device.service.call_records import ConversationSaver, RecordStore, save_last_call_id
from device.service.control import DUMP_AUDIO_TIMEOUT, ControlServer
from device.service.duplex_watch import DuplexWatch
from device.service.event_hub import EventHub
from device.service.instance import InstanceLock
from device.service.outage import Outage
from device.service.persist import PersistentState
from device.service.sdnotify import SystemdNotifier
from device.service.settings import Settings
from device.service.startup import StartupClock
from device.service.stats import write_json_atomic
from device.service.timers import CallTimers, earliest_due
from device.service.volume import VolumeController, volume_reply
from device.service.wake_word import wake_word_from_settings
from device.service.wiring import conversation_source, echo_control_settings, session_config
from device.session.client import SessionClient
from hw.audio import AudioBackend, VolumeControl
from hw.clock import Clock, RealClock
from hw.controls import ButtonName, ButtonPressed, Controls, LedState
from hw.errors import DeviceUnavailable
from hw.registry import audio_backend_from_settings, controls_backend, controls_from_settings

if TYPE_CHECKING:
    from device.diagnostics.dumper import DebugDumper
    from device.diagnostics.recorder import DebugRecorder

log = logging.getLogger(__name__)

TICK: Final = 1.0  # the longest main-thread wait: each idle wake-up costs more than its work (docs/benchmarks.md)
MAX_PENDING_EVENTS: Final = 1000
WATCHDOG_STALE: Final = 5.0  # an audio thread without progress for this long is stuck
LEVELS_INTERVAL: Final = 0.1  # the event stream's level meter: about 10 a second
_VOLUME_BUTTONS: Final = (ButtonName.VOLUME_UP, ButtonName.VOLUME_DOWN)


class ApplianceService:
    """The running appliance. `run()` on the main thread; `post()` from any thread.

    `observer(kind, data)` (optional) is told of state changes ("state"), transcripts ("transcript")
    and events ("event"), on the main thread; the demo prints them. Its report is `report.py`."""

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
        restart_initial: float = RESTART_INITIAL,
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
                                    earcons=settings.earcons,
                                    idle_hangup_seconds=settings.idle_hangup_seconds,
                                    max_call_seconds=settings.max_call_seconds,
                                    call_warning_seconds=settings.call_warning_seconds)
        self.persist = PersistentState(settings.state_dir)
        self.instance = InstanceLock(settings.control_socket, settings.state_dir)
        self.stats_writes = Outage(log, f"writing stats to {settings.stats_file}")
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
        self._devices = report.describe_devices(self)
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
                                    recorder=self.recorder, echo=echo_control_settings(settings))
        # The idle limit's "is anyone there": webrtc-noise-gain's is_speech when that processor
        # runs, else an energy detector; fed every processed mic frame by the capture thread.
        noise_on = settings.noise_suppression > 0 or settings.auto_gain_dbfs > 0
        dsp = self.dsp
        self.vad = SpeechDetector(dsp_flag=(lambda: dsp.last_is_speech) if noise_on else None)
        self.startup.mark("DSP (echo canceller, noise suppression)")
        self.hub = EventHub(settings.event_stream_buffer_bytes)
        # `wake_word` mode: the detector on the processed mic (a runtime that cannot load: exit 78).
        self.wake = wake_word_from_settings(settings, self.config, self.post, self.hub, self.clock)
        self.pipeline = AudioPipeline(self.backend, self.dsp, self.uplink, self.jitter, self.post,
                                      session_rate=rate, period_ms=settings.period_ms,
                                      buffer_periods=settings.playback_buffer_periods, clock=self.clock,
                                      jitter_seconds=settings.jitter_buffer_seconds,
                                      preroll_frames=round(settings.first_words_seconds * 100),
                                      on_frame=self.wake.frame_observer(self.vad.observe),
                                      held=self.wake.holding())
        self.timers = CallTimers(self.clock)
        saved_volume = self.persist.load_volume()
        self.volume = VolumeController(
            saved_volume if saved_volume is not None else settings.volume,
            settings.volume_floor_db, settings.volume_step, self.pipeline.gain, self._mixer(settings),
            self.persist.save_volume, self._confirm_volume if settings.earcons else None, self.clock)
        self._seen_speech = 0
        self._seen_agent = 0
        self._call_started_at: float | None = None
        self._call_id: str | None = None
        self.last_call: dict[str, Any] | None = None
        self.calls_ended: dict[str, int] = {}
        self.saver: ConversationSaver | None = None
        if settings.conversation_keep > 0:
            self.saver = ConversationSaver(conversation_source(settings), RecordStore(
                settings.state_dir, settings.conversation_keep, settings.conversation_max_bytes))
        p = self.pipeline
        self.audio_watch = AudioThreadWatch([
            WatchedThread("capture", lambda: p.capture, p.restart_capture, lambda: p.capture.counters.frames_captured),
            WatchedThread("playback", lambda: p.playback, p.restart_playback,
                          lambda: p.playback.counters.periods_played),
        ], self.post, watchdog_stale, restart_initial=restart_initial)
        self.session = SessionClient(session_config(settings), self.uplink, self._session_event,
                                     self.jitter.push, self._transcript, clock=self.clock)
        self._next_levels = 0.0
        self._commands_posted = 0    # written by the control thread only
        self._commands_handled = 0   # written by the main thread only
        self.duplex_watch = DuplexWatch(self.dsp, self.hub.publish)   # `duplex` events
        self.control = ControlServer(settings.control_socket, self._control_event, self.status, self.dump_audio,
                                     self.say, self.volume_command, self.hub, note=self.command_note)
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
        self._enqueue(event)

    def _enqueue(self, event: Event) -> bool:
        if self.events.qsize() >= MAX_PENDING_EVENTS:
            self.dropped_events += 1
            return False
        self.events.put(event)
        return True

    def _control_event(self, event: Event) -> None:
        """A control-socket command (the control thread): counted, so that `command_note` knows
        whether the published state already includes every command sent before this one."""
        if self._enqueue(event) and isinstance(event, Command):
            self._commands_posted += 1

    def _mixer(self, settings: Settings) -> VolumeControl | None:
        if settings.volume_mixer is None:
            return None
        try:
            return self.backend.volume_control(settings.volume_mixer, settings.volume_mixer_device)
        except DeviceUnavailable as exc:
            log.error("no hardware volume (%s); using the software gain; fix: check ATOMS_VOLUME_MIXER "
                      "against `amixer -D %s scontrols`", exc, settings.volume_mixer_device)
            return None

    def _confirm_volume(self) -> None:
        self.pipeline.play_earcon("volume")

    def _session_event(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            # Before the first delta of the new session reaches the jitter buffer.
            self.pipeline.set_stream_format(event.format)
            self.backend.call_started()   # the fake mic may start its file now (ATOMS_FAKE_CAPTURE_START)
        self.post(event)

    def _transcript(self, role: str, text: str) -> None:
        log.info("transcript %s: %s", role, text[:500])
        self.post_observer("transcript", {"role": role, "text": text})
        if role in ("user", "agent"):  # the receiver thread: publish() never blocks
            self.hub.publish(schema.TranscriptEvent(role=role, text=text))  # type: ignore[arg-type]

    def post_observer(self, kind: str, data: dict[str, Any]) -> None:
        if self.observer is not None:
            try:
                self.observer(kind, data)
            except Exception:
                log.exception("observer failed")

    def status(self) -> dict[str, Any]:
        """The last published status snapshot (any thread; never contains the key)."""
        return self._status

    def command_note(self, cmd: str) -> str | None:
        """What `cmd` will not do in the state the main thread last published (the control thread
        calls this; `self.state` is an immutable value replaced whole, so reading it is safe).

        None while an earlier command is still queued: the state it would be judged against is
        not the one it will meet (`hangup` then `call` back to back must not say "already in call")."""
        if self._commands_posted != self._commands_handled:
            return None
        return state_machine.describe_command(self.config, self.state, cmd)

    def request_stop(self) -> None:
        self.post(Shutdown())

    def dump_audio(self) -> dict[str, Any]:
        """`ctl dump-audio` (the control thread): write the debug recording now and reply."""
        from device.diagnostics.dumper import dump_reply  # imported only when used: start-up time

        return dump_reply(self.dumper, DUMP_AUDIO_TIMEOUT)

    def say(self, text: str) -> dict[str, Any]:
        """`ctl say` (the control thread): typed text to the agent, only during a call. Mute is
        the mic's promise, so text may still be sent while muted: a person typed it on purpose."""
        call = self.state.call  # one reference read: the main thread replaces the state whole
        if call is not CallState.IN_CALL:
            return {"ok": False, "error": f"not in a call (call state {call.value}); start one with ctl call"}
        if not self.session.send_text(text):
            return {"ok": False, "error": "the session is not connected right now; try again"}
        log.info("text to the agent: %d characters", len(text))
        return {"ok": True, "cmd": "say", "chars": len(text)}

    def volume_command(self, spec: str | None) -> dict[str, Any]:
        """`ctl volume [N|+N|-N]` (the control thread): the level now, or a change for the main
        thread; the reply gives the level it will have (clamped to 0-100)."""
        reply, command = volume_reply(spec, self.volume.level)
        if command is not None:
            self.post(command)
        return reply

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
        # First: a second copy must stop before it touches the socket, the devices or state.json.
        self.instance.acquire()
        if self.install_signals and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        self.startup.mark("pipeline and client objects")
        self.control.bind()
        if self.dumper is not None:
            self.dumper.start()
        if self.saver is not None:
            self.saver.start()
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
        self.notifier.status(report.status_text(self.state, self.wake.listening_for))
        log.info("ready: %s mode, control socket %s; %s", self.config.mode.value, self.settings.control_socket,
                 self.startup.summary())

    def run(self) -> int:
        """Start, then process events until shutdown. Returns the exit status."""
        self.start()
        try:
            while not self._stop.is_set():
                timeout = min(TICK, self.timers.due_in(), earliest_due(time.monotonic(), (
                    (self._next_watchdog, self.watchdog_interval is not None),
                    (self._next_stats, self.settings.stats_file is not None), (self._next_levels, self.pipeline.gain.measure))))
                try:
                    event = self.events.get(timeout=timeout)
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
        level = self.volume.level
        if isinstance(event, VolumeCommand):
            self.volume.set(event.level if event.level is not None else self.volume.level + event.delta)
        elif isinstance(event, ButtonPressed) and event.button in _VOLUME_BUTTONS:
            self.volume.step(1 if event.button is ButtonName.VOLUME_UP else -1)
        elif isinstance(event, (HardwareLost, HardwareBack)):
            self.hub.publish(schema.HardwareEvent(device=event.device, lost=isinstance(event, HardwareLost),
                                                  reason=getattr(event, "reason", "")))
        elif isinstance(event, WakeWordDetected):
            self.wake.heard(event, self.state)
        if self.volume.level != level:
            self.hub.publish(schema.VolumeEvent(level=self.volume.level))
        had_faults, was_up = bool(self.state.hardware_faults), self.state.call_up
        transition = state_machine.step(self.config, self.state, event)
        if isinstance(event, SessionStarted) and transition.state.call_up:
            self._call_started(event, fresh=not was_up)
        self._apply(transition.state, transition.actions)
        if isinstance(event, Command):
            self._commands_handled += 1   # after the state that includes it is in self.state
        if (isinstance(event, HardwareLost) and self.dumper is not None and not had_faults
                and self.state.hardware_faults):
            # The first lost device of an outage (until all are back): keep the audio leading up to it.
            self.dumper.request_outage(event.device)

    def _apply(self, new_state: MachineState, actions: tuple[Action, ...]) -> None:
        old = self.state
        self.wake.before(new_state)   # a listener that must stop stops before the gate closes
        self.state = new_state
        if new_state.last_error and new_state.last_error != old.last_error:
            self.hub.publish(schema.ErrorEvent(message=new_state.last_error))
        if (old.call, old.muted, old.agent_speaking, old.talking) != \
                (new_state.call, new_state.muted, new_state.agent_speaking, new_state.talking):
            log.info("state %s%s%s%s", new_state.call.value, " muted" if new_state.muted else "",
                     " agent-speaking" if new_state.agent_speaking else "", " talking" if new_state.talking else "")
            self.post_observer("state", {"call": new_state.call.value, "muted": new_state.muted,
                                         "agent_speaking": new_state.agent_speaking,
                                         "talking": new_state.talking})
        for action in actions:
            self._do(action)
        self.wake.after(new_state)
        self.notifier.status(report.status_text(new_state, self.wake.listening_for))
        self._publish_changes(old, new_state)  # after the actions: a call_ended comes before its idle
        self._publish_status()

    def _call_started(self, event: SessionStarted, fresh: bool) -> None:
        if fresh:
            self._call_started_at = self.clock.monotonic()
        self._call_id = event.call_id
        self.hub.publish(schema.CallStartedEvent(session_id=event.session_id, call_id=event.call_id,
                                          sample_rate=event.sample_rate, resumed=not fresh))
        save_last_call_id(self.settings.state_dir, event.call_id, event.session_id)
        log.info("call %s: session %s, call %s", "started" if fresh else "resumed", event.session_id,
                 event.call_id)

    def _call_ended(self, action: CallEnded) -> None:
        started = self._call_started_at
        duration = round(self.clock.monotonic() - started, 1) if started is not None else 0.0
        self._call_started_at = None
        self.calls_ended[action.reason] = self.calls_ended.get(action.reason, 0) + 1
        self.last_call = {"reason": action.reason, "duration_s": duration, "call_id": self._call_id}
        log.info("call ended: reason %s after %.1f s", action.reason, duration)
        self.hub.publish(schema.CallEndedEvent(reason=action.reason, duration_s=duration, call_id=self._call_id))
        if self.saver is not None and self._call_id is not None:
            self.saver.request(self._call_id)

    def _poll_activity(self) -> None:
        """Tell the machine someone is there: speech since the last tick, agent audio played."""
        speech, agent = self.vad.speech_frames, self.pipeline.playback.counters.agent_periods_played
        if speech != self._seen_speech:
            self._seen_speech = speech
            self.handle(Activity("speech"))
        if agent != self._seen_agent:
            self._seen_agent = agent
            self.handle(Activity("agent"))

    def _expire_timers(self) -> None:
        # One at a time: an expiry's actions may cancel or restart the others.
        while (name := self.timers.pop_due()) is not None:
            log.info("timer %s expired", name)
            self.handle(TimerExpired(name))
            if name in ("idle_warning", "max_warning") and self.state.call_up:
                self.hub.publish(schema.CallWarningEvent(limit="idle" if name == "idle_warning" else "max_duration"))

    def _publish_changes(self, old: MachineState, new: MachineState) -> None:
        """One stream event per changed field (main thread)."""
        if old.call != new.call:
            self.hub.publish(schema.CallStateEvent(state=new.call.value))
        if old.muted != new.muted:
            self.hub.publish(schema.MutedEvent(muted=new.muted))
        if old.agent_speaking != new.agent_speaking:
            self.hub.publish(schema.AgentSpeakingEvent(speaking=new.agent_speaking))
        if old.talking != new.talking:
            self.hub.publish(schema.TalkingEvent(held=new.talking))

    def _do(self, action: Action) -> None:
        if isinstance(action, SetMicGate):
            # Discard unsent audio when the gate closes for privacy or the call ends; keep it
            # when a push-to-talk turn ends (its commit is queued right behind it).
            discard = self.state.muted or self.state.call != CallState.IN_CALL
            self.pipeline.set_mic_gate(action.open, hold=action.hold, discard_queued=discard)
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
            log.debug("earcon %s", action.name)
            if self.settings.earcons:
                self.pipeline.play_earcon(action.name)
        elif isinstance(action, PersistMute):
            self.persist.save_muted(action.muted)
        elif isinstance(action, StartTimer):
            self.timers.start(action.name, action.seconds)
        elif isinstance(action, CancelTimer):
            self.timers.cancel(action.name)
        elif isinstance(action, CallEnded):
            self._call_ended(action)
        elif isinstance(action, StopService):
            self._stop.set()

    def _tick(self) -> None:
        now = time.monotonic()
        if not self.state.shutting_down:
            self.audio_watch.check()   # a dead or stuck audio thread becomes a hardware fault
        self.pipeline.gain.measure = self.hub.wants_levels
        if self.pipeline.gain.measure and now >= self._next_levels:
            self._next_levels = now + LEVELS_INTERVAL
            self.hub.publish(schema.LevelsEvent(mic_dbfs=round(self.vad.level_dbfs, 1),
                                         speaker_dbfs=round(self.pipeline.gain.level_dbfs, 1)))
        self._poll_activity()
        self.duplex_watch.poll()
        self._expire_timers()
        self._publish_status()  # counters in `ctl status` stay current during a steady call
        if self.ignored_dump_signals != self._warned_dump_signals:
            self._warned_dump_signals = self.ignored_dump_signals
            log.warning("SIGUSR1: debug recording is off, nothing to write; set ATOMS_DEBUG_RECORD_DIR "
                        "(or debug_record_dir in config.toml) and restart the service")
        if self.watchdog_interval is not None and now >= self._next_watchdog:
            self._next_watchdog = now + self.watchdog_interval
            # Vouch only while both audio threads make progress: a stuck one lets systemd restart us.
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
        self._status = report.status(self)

    def counters(self) -> dict[str, Any]:
        return report.counters(self)

    def stats(self) -> dict[str, Any]:
        return report.stats(self)

    def write_stats(self) -> None:
        if self.settings.stats_file is None:
            return
        try:
            write_json_atomic(self.settings.stats_file, self.stats())
        except OSError as exc:
            self.stats_writes.failed(exc)   # logged once per outage (a full disk repeats every interval)
        else:
            self.stats_writes.ok()

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
        if self.saver is not None:
            self.saver.stop()
        if self.dumper is not None:
            self.dumper.stop()   # before joining the control thread, which may wait for a dump
        self.pipeline.stop()
        self.session.join()
        self.control.join()
        if self.saver is not None:
            self.saver.join()
        if self.dumper is not None:
            self.dumper.join()
        self.pipeline.join()
        self.wake.close()   # after the capture thread's join; a thread that outlived it is refused
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
        self.instance.release()
        log.info("stopped")

