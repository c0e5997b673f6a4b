"""The wake word call mode's wiring in the service (`call_mode = "wake_word"`).

It builds the detector from the settings (a runtime that cannot load is a config error naming
the platform: the CLI prints its one line and exits 78), puts a `WakeTap` on the processed mic
(the capture pipeline's 16 kHz output, the same per-frame hook as the local VAD), keeps the tap's
listening in step with the state machine (`wake_listening` after every transition), and reports
detections on the event stream, in the log and in `ctl status`.

Privacy order, on the main thread: before a transition's actions run, a tap that must stop stops
(and drops its latch), so the closing `SetMicGate` that follows discards what the latch held;
after them, listening resumes or, when the machine now holds the mic itself for the call the
detection started, the latch is released (the two overlap, so no frame falls between).

`NoWakeWord` stands in for every other mode: the supervisor calls the same methods either way.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from device.audio.wake_tap import Detection, StreamingDetector, WakeTap
from device.core.events import CallMode, Event, MachineConfig, MachineState, WakeWordDetected
from device.core.outputs import mic_hold, wake_listening
from device.service.event_schema import WakeListeningEvent, WakeWordEvent
from device.service.settings import ConfigError, Settings, env_name
from hw.clock import Clock

if TYPE_CHECKING:
    from device.service.event_hub import EventHub

log = logging.getLogger(__name__)


def build_detector(settings: Settings) -> StreamingDetector:
    """The detector the settings describe; raises ConfigError (one line) when it cannot load."""
    from device.wake.detector import WakeWordDetector, WakeWordUnavailable  # only in this mode

    try:
        return WakeWordDetector(model=settings.wake_word_model, model_file=settings.wake_word_model_file,
                                cutoff=settings.wake_word_cutoff,
                                refractory_s=settings.wake_word_refractory_seconds)
    except WakeWordUnavailable as exc:
        if settings.wake_word_model_file is not None:
            fix = (f"check {env_name('wake_word_model_file')} (a microWakeWord .tflite with its .json beside "
                   "it) or unset it to use a built-in wake word")
        else:
            fix = "use call_mode button, push_to_talk or always on this device"
        raise ConfigError(f"config error: {env_name('call_mode')} (config.toml: call_mode) is wake_word but "
                          f"{exc}; fix: {fix}") from None


class WakeWordService:
    """The wake word listener of a running service. Main thread, except `observe`/`holding`
    (the capture thread, through the tap) and `_detected` (the capture thread: enqueues only)."""

    def __init__(self, config: MachineConfig, detector: StreamingDetector, post: Callable[[Event], None],
                 hub: EventHub, clock: Clock, describe: dict[str, Any]) -> None:
        self.config = config
        self._post = post
        self._hub = hub
        self.tap = WakeTap(detector, self._detected, clock)
        self.describe = describe   # model, cutoff, refractory: for the status
        self.ignored = 0           # detections the machine did not act on (they raced a change)
        self.last: dict[str, Any] | None = None

    def _detected(self, detection: Detection) -> None:
        self._post(WakeWordDetected(model=detection.model, score=round(float(detection.score), 3)))

    # -- the capture thread's hooks ---------------------------------------------------------------
    def frame_observer(self, vad: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """The per-frame hook on the processed mic: the local VAD, then the tap."""
        tap = self.tap.observe

        def observe(frame: bytes) -> None:
            vad(frame)
            tap(frame)
        return observe

    def holding(self) -> Callable[[], bool] | None:
        return lambda: self.tap.holding

    # -- main thread ------------------------------------------------------------------------------
    def heard(self, event: WakeWordDetected, state: MachineState) -> None:
        """A detection reached the main thread, before the machine sees it: log and publish it,
        and release the latch of one the machine will ignore (it raced mute or a call)."""
        starts = wake_listening(self.config, state)
        self.last = {"model": event.model, "score": event.score, "started_call": starts}
        self._hub.publish(WakeWordEvent(model=event.model, score=event.score, started_call=starts))
        if starts:
            log.info("wake word %s heard (score %.2f): starting a call", event.model, event.score)
        else:
            self.ignored += 1
            self.tap.refuse()
            log.info("wake word %s heard (score %.2f) while not listening (%s): ignored", event.model,
                     event.score, "muted" if state.muted else state.call.value)

    def before(self, new: MachineState) -> None:
        """Before a transition's actions: stop (dropping the latch) if the new state neither
        listens nor holds the mic, so its closing SetMicGate discards the held audio."""
        if not wake_listening(self.config, new) and not mic_hold(self.config, new):
            self._listen(False)

    def after(self, new: MachineState) -> None:
        """After them: listen again, or hand the latch over to the machine's own hold."""
        self._listen(wake_listening(self.config, new))

    def _listen(self, on: bool) -> None:
        was = self.tap.listening
        self.tap.listen(on)
        if was != on:
            log.info("wake word: %s", "listening" if on else "not listening")
            self._hub.publish(WakeListeningEvent(listening=on))

    def close(self) -> None:
        """Release the detector's runtime at shutdown (the tap refuses later frames)."""
        self.tap.close()

    @property
    def listening_for(self) -> str | None:
        """The wake word's model while the detector listens (for STATUS=), else None."""
        return str(self.describe["model"]) if self.tap.listening else None

    def status(self) -> dict[str, Any] | None:
        return {**self.describe, "listening": self.tap.listening, "detections": self.tap.detections,
                "ignored": self.ignored, "last_detection": self.last}

    def counters(self) -> dict[str, int]:
        return {"wake_frames_heard": self.tap.frames_heard, "wake_detections": self.tap.detections,
                "wake_detections_ignored": self.ignored, "wake_detector_errors": self.tap.detector_errors}


class NoWakeWord:
    """Every mode but `wake_word`: the same calls, doing nothing."""

    listening_for: str | None = None

    def frame_observer(self, vad: Callable[[bytes], None]) -> Callable[[bytes], None]:
        return vad

    def holding(self) -> Callable[[], bool] | None:
        return None

    def heard(self, event: WakeWordDetected, state: MachineState) -> None:
        log.debug("wake word event outside wake_word mode: ignored")

    def before(self, new: MachineState) -> None:
        pass

    def after(self, new: MachineState) -> None:
        pass

    def close(self) -> None:
        pass

    def status(self) -> dict[str, Any] | None:
        return None

    def counters(self) -> dict[str, int]:
        return {}


def wake_word_from_settings(settings: Settings, config: MachineConfig, post: Callable[[Event], None],
                            hub: EventHub, clock: Clock) -> WakeWordService | NoWakeWord:
    """The listener for `wake_word` mode (its detector loaded now: a failure stops the start),
    else the stand-in."""
    if config.mode is not CallMode.WAKE_WORD:
        return NoWakeWord()
    describe = {"model": settings.wake_word_model_file.stem if settings.wake_word_model_file
                else settings.wake_word_model, "cutoff": settings.wake_word_cutoff,
                "refractory_s": settings.wake_word_refractory_seconds}
    service = WakeWordService(config, build_detector(settings), post, hub, clock, describe)
    log.info("wake word: model %s, cutoff %s, refractory %.1f s", describe["model"],
             describe["cutoff"] if describe["cutoff"] is not None else "the model's",
             describe["refractory_s"])
    return service
