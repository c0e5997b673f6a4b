"""`doctor --audio`: a live mic level meter, then the echo test, each ending in advice.

Runs on the CLI's main thread: the meter reads the mic for `--seconds`, drawing a level bar on a
terminal (a plain line per second elsewhere); the echo test plays chirps through the speaker and
records them (`device.doctor.echo`). Each part opens its own backend from the factory, as the
service does (`hw.registry.audio_backend_from_settings(settings)`), so the fake room starts each
part with its full delay line. The results say what to change: gain, device, `aec`, `half_duplex`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from device.audio.echo_control import EchoControlSettings
from device.audio.formats import DSP_RATE, samples_for
from device.doctor.core import CheckResult, describe_exception
from device.doctor.echo import ChirpPlan, EchoMeasurement, analyse, record_echo
from device.doctor.meter import (
    SILENCE_DBFS,
    LevelReading,
    LiveLine,
    MeterResult,
    format_reading,
    progress_bar,
    run_meter,
)
from hw.audio import AudioBackend

log = logging.getLogger(__name__)

CLIP_WARN_DBFS: Final = -1.0      # a peak this close to full scale is about to clip
QUIET_DBFS: Final = -50.0         # the loudest 100 ms below this: nobody spoke, or the gain is low
NOISY_DBFS: Final = -40.0         # a background this loud swamps speech detection
DELAY_WARN_MS: Final = 450.0      # AEC3 searches up to ~500 ms
DRIFT_WARN_PPM: Final = 20.0      # one crystal shows ~0; two separate cards tens of ppm
ERLE_GOOD_DB: Final = 25.0        # the pipeline's own test expects >= 25 dB after a second
LOUD_ECHO_DB: Final = -30.0       # with aec off, an echo louder than this reaches the agent
DISTORTION_WARN_DB: Final = -28.0  # clean speakers measured -33 to -40 dB, clipping ones -23 and up


@dataclass(frozen=True)
class AudioOptions:
    """What the audio part needs from settings (an immutable value; any thread)."""

    backend_name: str = "alsa"
    play_rate: int = 16000
    period_ms: int = 10
    buffer_periods: int = 4
    aec: str = "webrtc"
    half_duplex: bool = False
    seconds: float = 3.0
    echo_drift_ppm: float = 0.0
    residual_echo: bool = False
    adaptive_half_duplex: bool = True
    noise_suppression: int = 2    # the service's level: the residual echo gate measures after it

    @property
    def echo_stages(self) -> EchoControlSettings:
        return EchoControlSettings(self.echo_drift_ppm, self.residual_echo, self.adaptive_half_duplex)


def advise_mic(result: MeterResult, fake: bool = False) -> CheckResult:
    """The mic line from the meter: silent, clipping, quiet or noisy, each with its fix."""
    name = "mic level"
    data = result.to_json()
    detail = (f"peak {result.peak_dbfs:.1f} dBFS, loudest {result.loudest_rms_dbfs:.1f} dBFS RMS, "
              f"background {result.floor_dbfs:.1f} dBFS over {result.seconds:.1f} s")
    if result.readings == 0:
        return CheckResult.fail(name, "no audio was read", "check the microphone line above", **data)
    if result.peak_dbfs <= SILENCE_DBFS:
        if fake:
            return CheckResult.warn(name, "the fake mic is digital silence",
                                    "set ATOMS_FAKE_CAPTURE_FILE to a WAV to hear something", **data)
        return CheckResult.fail(name, "the mic delivers digital silence (every sample is 0)",
                                "check ATOMS_CAPTURE_DEVICE (`atoms-appliance devices`) and unmute the capture "
                                "channel in alsamixer", **data)
    if result.clipped or result.peak_dbfs >= CLIP_WARN_DBFS:
        return CheckResult.warn(name, f"{detail}; {result.clipped} samples clipped",
                                "lower the mic gain (alsamixer, Capture) until peaks stay below -3 dBFS", **data)
    if result.floor_dbfs > NOISY_DBFS:
        return CheckResult.warn(name, f"{detail}: a loud background",
                                "move the mic away from fans and the speaker, lower the mic gain, or raise "
                                "ATOMS_NOISE_SUPPRESSION (3 or 4)", **data)
    if result.loudest_rms_dbfs < QUIET_DBFS:
        return CheckResult.warn(name, f"{detail}: very quiet (did you speak?)",
                                "raise the mic gain (alsamixer, Capture) or set ATOMS_AUTO_GAIN_DBFS=9", **data)
    return CheckResult.passed(name, detail, **data)


def advise_echo(m: EchoMeasurement, aec: str, half_duplex: bool,
                stages: EchoControlSettings | None = None) -> list[CheckResult]:
    """Lines for the echo path (delay and level, reverberation, distortion), the clocks, our
    canceller, and what the service will do about this room, each with what to change."""
    stages = stages or EchoControlSettings()
    data = m.to_json()
    if not m.found or m.delay_ms is None or m.level_db is None:
        if aec == "off":
            return [CheckResult.passed("echo", "no echo of the test chirps reached the mic (as aec = off "
                                       "expects of a speakerphone that cancels its own)", **data)]
        return [CheckResult.warn("echo", f"the mic did not hear the test chirps (detection {m.detection_db:.0f} dB)",
                                 "turn the speaker up and check ATOMS_PLAYBACK_DEVICE and the mic; a speakerphone "
                                 "with its own echo canceller: set ATOMS_AEC=off", **data)]
    results = []
    noisy = f"; the room was not quiet ({m.noise_dbfs:.0f} dBFS), so these are rough" \
        if m.noise_dbfs > NOISY_DBFS else ""
    detail = (f"heard {m.delay_ms:.1f} ms after the speaker write, {m.level_db:+.1f} dB from what was played "
              f"(peak {m.echo_peak_dbfs:.1f} dBFS at the mic, background {m.noise_dbfs:.1f} dBFS){noisy}")
    if m.delay_ms < -5:
        results.append(CheckResult.warn("echo", f"{detail}: heard before it was played",
                                        "the mic and speaker streams are not in step: use one sound card for both",
                                        **data))
    elif m.delay_ms > DELAY_WARN_MS:
        results.append(CheckResult.warn("echo", f"{detail}: near the canceller's ~500 ms limit",
                                        "lower ATOMS_PLAYBACK_BUFFER_PERIODS or ATOMS_PERIOD_MS, or use a "
                                        "device with less buffering", **data))
    elif m.clipped or (m.echo_peak_dbfs is not None and m.echo_peak_dbfs >= CLIP_WARN_DBFS):
        results.append(CheckResult.warn("echo", f"{detail}: the echo clips the mic",
                                        "lower the speaker volume or the mic gain (alsamixer): clipped echo cannot "
                                        "be cancelled; otherwise set ATOMS_HALF_DUPLEX=true", **data))
    elif m.level_db > 0:
        results.append(CheckResult.warn("echo", f"{detail}: louder than what was played",
                                        "lower the speaker volume or move the mic away from the speaker", **data))
    else:
        results.append(CheckResult.passed("echo", detail, **data))
    results += _advise_shape(m)
    results.append(_advise_drift(m, stages))
    results.append(_advise_reduction(m, aec, half_duplex))
    if aec != "off":
        results.append(_advise_handling(m, half_duplex, stages))
    return results


def _advise_shape(m: EchoMeasurement) -> list[CheckResult]:
    """The reverberation tail and the speaker's distortion, from the measured impulse response."""
    results = []
    if m.decay_ms is None:
        results.append(CheckResult.passed("reverberation", "no reverberation tail over the background (a dry "
                                          "echo path)"))
    else:
        d2r = f", direct sound {m.direct_to_reverb_db:+.0f} dB over the reverberation" \
            if m.direct_to_reverb_db is not None else ""
        detail = f"the echo decays 60 dB in {m.decay_ms:.0f} ms{d2r}"
        if m.direct_to_reverb_db is not None and m.direct_to_reverb_db < 0:
            results.append(CheckResult.warn("reverberation", f"{detail}: a reverberant room with the mic far "
                                            "from the speaker; the canceller cannot model the whole tail",
                                            "move the mic nearer the device (or the speaker away from hard "
                                            "walls and corners), or soften the room (curtains, a rug)"))
        else:
            results.append(CheckResult.passed("reverberation", detail))
    if m.distortion_db is None:
        results.append(CheckResult.skip("speaker distortion", "not measurable on this recording"))
    elif m.distortion_db > DISTORTION_WARN_DB or m.clipped:
        what = "the mic clips" if m.clipped else "the speaker distorts"
        results.append(CheckResult.warn("speaker distortion", f"{what}: harmonics {-m.distortion_db:.0f} dB "
                                        "under the echo; no linear canceller removes them",
                                        "lower the speaker volume (`atoms-appliance ctl volume`, or the "
                                        "amplifier/mixer gain) or use a larger speaker"))
    else:
        results.append(CheckResult.passed("speaker distortion",
                                          f"harmonics {-m.distortion_db:.0f} dB under the echo (clean)"))
    return results


def _advise_drift(m: EchoMeasurement, stages: EchoControlSettings) -> CheckResult:
    drift = m.drift_ppm or 0.0
    if abs(drift) <= DRIFT_WARN_PPM:
        note = f"; ATOMS_ECHO_DRIFT_PPM={stages.drift_ppm:g} is set but not needed: set it to 0" \
            if stages.drift_ppm else ""
        return CheckResult.passed("clock drift", f"{drift:+.1f} ppm: mic and speaker share a clock{note}")
    detail = f"mic and speaker clocks differ by {drift:+.0f} ppm (separate sound cards)"
    if stages.drift_ppm and abs(stages.drift_ppm - drift) <= max(DRIFT_WARN_PPM, 0.2 * abs(drift)):
        return CheckResult.passed("clock drift", f"{detail}; compensated (ATOMS_ECHO_DRIFT_PPM="
                                  f"{stages.drift_ppm:g})")
    return CheckResult.warn("clock drift", detail,
                            f"set ATOMS_ECHO_DRIFT_PPM={drift:.0f} (drift compensation on the echo reference), "
                            "or use one card for mic and speaker (a USB speakerphone, a HAT with both)")


def _advise_handling(m: EchoMeasurement, half_duplex: bool, stages: EchoControlSettings) -> CheckResult:
    """What the service will do in this room: full duplex, drift compensation, adaptive half-duplex."""
    name = "echo handling"
    parts = ["residual echo suppression on" if stages.residual_echo else "residual echo suppression off"]
    parts.append(f"drift compensation on ({stages.drift_ppm:+g} ppm)" if stages.drift_ppm
                 else "drift compensation off")
    residual = f" (echo left {m.residual_echo_db:.0f} dB over the background)" \
        if m.residual_echo_db is not None else ""
    if half_duplex:
        return CheckResult.passed(name, f"half duplex (ATOMS_HALF_DUPLEX=true): the mic is closed while the agent "
                                  f"talks; {', '.join(parts)}")
    if m.duplex == "half":
        if stages.adaptive_half_duplex:
            return CheckResult.warn(name, f"adaptive half-duplex{residual}: the agent's echo is audible here, so "
                                    f"the uplink is gated while it talks and a person must speak up to interrupt "
                                    f"it; {', '.join(parts)}",
                                    "for full duplex: lower the speaker volume, move the mic away from the speaker "
                                    "or nearer the person, or fix the lines above")
        return CheckResult.warn(name, f"full duplex, but the agent's echo is audible here{residual} and "
                                f"adaptive_half_duplex is off: the agent may hear itself",
                                "set ATOMS_ADAPTIVE_HALF_DUPLEX=true, or lower the speaker volume")
    if stages.adaptive_half_duplex and m.residual_attenuation_db > 0 and m.erle_after_ns_db is not None:
        return CheckResult.passed(
            name, f"full duplex{residual}; after noise suppression {m.erle_after_ns_db:.0f} dB of echo reduction, "
                  f"so the uplink is turned down {m.residual_attenuation_db:.0f} dB while the agent talks alone "
                  f"(a person talking over it is not); {', '.join(parts)}")
    return CheckResult.passed(name, f"full duplex{residual}; {', '.join(parts)}")


def _advise_reduction(m: EchoMeasurement, aec: str, half_duplex: bool) -> CheckResult:
    name = "echo reduction"
    level = m.level_db if m.level_db is not None else -math.inf
    if aec == "off":
        if level > LOUD_ECHO_DB:
            return CheckResult.warn(name, f"aec is off and the echo is only {-level:.0f} dB down",
                                    "set ATOMS_AEC=webrtc (keep it off only for a speakerphone that cancels its "
                                    "own echo)")
        return CheckResult.passed(name, f"aec is off; the echo is {-level:.0f} dB down")
    if m.erle_db is None:
        return CheckResult.skip(name, "not measurable: the echo does not stand out of the background noise")
    if m.noise_dbfs > NOISY_DBFS and m.erle_db < ERLE_GOOD_DB:
        return CheckResult.skip(name, f"not measurable in a room this loud ({m.noise_dbfs:.0f} dBFS): run "
                                "`doctor --audio` again in a quiet moment")
    if m.erle_limited:
        return CheckResult.passed(name, f"our canceller removes at least {m.erle_db:.0f} dB "
                                  "(what is left is under the background noise)")
    if m.erle_db >= ERLE_GOOD_DB:
        return CheckResult.passed(name, f"our canceller removes {m.erle_db:.0f} dB of echo")
    fix = ("half_duplex is on (the mic is gated while the agent talks): lower the speaker volume or move the mic"
           if half_duplex else
           "lower the speaker volume or move the mic away; if the agent still hears itself, set "
           "ATOMS_HALF_DUPLEX=true")
    return CheckResult.warn(name, f"our canceller removes only {m.erle_db:.0f} dB of echo", fix)


def _second_reading(readings: list[LevelReading]) -> LevelReading:
    power = sum(10 ** (r.rms_dbfs / 10) for r in readings) / max(len(readings), 1)
    return LevelReading(max(r.peak_dbfs for r in readings),
                        10 * math.log10(power) if power > 0 else SILENCE_DBFS, sum(r.clipped for r in readings))


def measure_mic(backend: AudioBackend, options: AudioOptions, live: LiveLine) -> MeterResult:
    """The level meter: `options.seconds` of mic audio, a live bar on a terminal."""
    live.note(f"Mic level for {options.seconds:g} s: talk normally at your usual distance.")
    second: list[LevelReading] = []

    def show(reading: LevelReading, fraction: float) -> None:
        live.update(format_reading(reading))
        second.append(reading)
        if not live.tty and len(second) == 10:   # plain output: one line per second
            live.note(format_reading(_second_reading(second)))
            second.clear()

    mic = backend.capture(DSP_RATE, samples_for(DSP_RATE, options.period_ms))
    with mic:
        result = run_meter(mic, options.seconds, show)
    live.clear()
    return result


def measure_echo(backend: AudioBackend, options: AudioOptions, live: LiveLine,
                 plan: ChirpPlan) -> EchoMeasurement:
    """The echo test: chirps out, recording in, then the analysis (our canceller included)."""
    live.note(f"Echo test: playing chirps through the speaker for {plan.total_seconds:.0f} s; please keep quiet.")
    recording = record_echo(backend, options.play_rate, plan, options.period_ms, options.buffer_periods,
                            lambda f: live.update(f"chirps {progress_bar(f)}"))
    live.update("analysing the recording...")
    # Our canceller runs even with aec = off: its figure tells whether turning it on would help.
    measurement = analyse(recording, plan, stages=options.echo_stages, noise_suppression=options.noise_suppression)
    live.clear()
    return measurement


def run_audio(options: AudioOptions, backend_factory: Callable[[], AudioBackend], live: LiveLine,
              plan: ChirpPlan | None = None) -> tuple[list[CheckResult], dict[str, Any]]:
    """Meter, then echo test; each part fails on its own (a missing speaker still meters the mic).

    Each part makes its backend with `backend_factory` and closes it when done."""
    plan = plan or ChirpPlan()
    results: list[CheckResult] = []
    data: dict[str, Any] = {}
    try:
        backend = backend_factory()
        try:
            meter = measure_mic(backend, options, live)
        finally:
            backend.close()
        data["meter"] = meter.to_json()
        results.append(advise_mic(meter, fake=options.backend_name == "fake"))
    except OSError as exc:   # DeviceUnavailable, or a fake device's unreadable WAV
        live.clear()
        results.append(CheckResult.fail("mic level", f"cannot read the mic: {describe_exception(exc)}",
                                        "see the microphone line of `atoms-appliance doctor`"))
    try:
        backend = backend_factory()
        try:
            echo = measure_echo(backend, options, live, plan)
        finally:
            backend.close()
        data["echo"] = echo.to_json()
        results += advise_echo(echo, options.aec, options.half_duplex, options.echo_stages)
    except OSError as exc:
        live.clear()
        results.append(CheckResult.fail("echo", f"cannot run the echo test: {describe_exception(exc)}",
                                        "see the microphone and speaker lines of `atoms-appliance doctor`"))
    return results, data
