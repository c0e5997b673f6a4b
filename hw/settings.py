"""The settings the hardware backends read, as typing Protocols (hw owns its words, as for controls).

`hw` never imports the application's settings class. Each backend's `from_settings(settings)`
takes the Protocol below that lists exactly the fields it reads, and `HwSettings` is all of them:
what `hw.registry.audio_backend_from_settings` and `controls_from_settings` take.
`device.service.settings.Settings` satisfies `HwSettings` structurally (mypy checks an assignment
in that module), so a renamed or retyped field breaks the type check, not a device at boot.

Fields are read-only properties: a frozen settings object satisfies them, and a field typed more
narrowly there (a `Literal` of the allowed names) still fits the `str` asked for here.
Units are the settings' own: milliseconds, seconds, BCM pin numbers, decibels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Final, Literal, Protocol

# What `gpio_board` may say (hw/gpio_factory.py): a Raspberry Pi as gpiozero recognises it, or
# any other board with the chip's line N as GPIO N.
GpioBoard = Literal["auto", "pi", "generic"]
GPIO_BOARDS: Final = ("auto", "pi", "generic")


class AlsaSettings(Protocol):
    """What `hw.alsa.AlsaAudioBackend.from_settings` reads."""

    @property
    def capture_device(self) -> str: ...     # ALSA PCM name of the microphone

    @property
    def playback_device(self) -> str: ...    # ALSA PCM name of the speaker

    @property
    def period_ms(self) -> int: ...          # driver period, a multiple of 10 ms

    @property
    def playback_buffer_periods(self) -> int: ...


class FakeAudioSettings(Protocol):
    """What `hw.fake_audio.FakeAudioBackend.from_settings` reads (the mic file, the speaker
    recording, pacing, and the simulated room: no room unless a gain, an impulse response or
    ambient noise is set; drift and speaker clipping shape the echo, so they need one of the first two)."""

    @property
    def fake_capture_file(self) -> Path | None: ...

    @property
    def fake_playback_file(self) -> Path | None: ...

    @property
    def fake_capture_start(self) -> str: ...   # "open" | "call": when the mic plays its file

    @property
    def fake_playback_max_silence_seconds(self) -> float: ...   # longer silences left out of the recording

    @property
    def fake_realtime(self) -> bool: ...

    @property
    def fake_echo_delay_ms(self) -> float: ...

    @property
    def fake_echo_gain_db(self) -> float | None: ...

    @property
    def fake_echo_ir_file(self) -> Path | None: ...

    @property
    def fake_echo_drift_ppm(self) -> float: ...   # speaker clock vs mic clock; 0: one clock

    @property
    def fake_speaker_clip_dbfs(self) -> float | None: ...   # speaker saturation level; None: linear

    @property
    def fake_noise_dbfs(self) -> float | None: ...   # ambient noise at the mic, RMS; None: none


class GpioSettings(Protocol):
    """What `hw.gpio.GpioControls.from_settings` reads (and `MockGpioControls`); None leaves a part out."""

    @property
    def call_pin(self) -> int | None: ...

    @property
    def mute_pin(self) -> int | None: ...

    @property
    def status_led_pin(self) -> int | None: ...

    @property
    def mute_led_pin(self) -> int | None: ...

    @property
    def speaking_led_pin(self) -> int | None: ...

    @property
    def button_bounce_ms(self) -> int: ...

    @property
    def long_press_seconds(self) -> float: ...

    @property
    def volume_up_pin(self) -> int | None: ...

    @property
    def volume_down_pin(self) -> int | None: ...

    @property
    def volume_encoder_a_pin(self) -> int | None: ...  # the rotary encoder: both pins or neither

    @property
    def volume_encoder_b_pin(self) -> int | None: ...

    @property
    def gpio_chip(self) -> int | None: ...   # /dev/gpiochipN; None: gpiozero's choice on a Pi, else 0

    @property
    def gpio_board(self) -> GpioBoard: ...


class HwSettings(AlsaSettings, FakeAudioSettings, GpioSettings, Protocol):
    """Every field a hardware backend reads, plus the two that choose the backends by name."""

    @property
    def audio_backend(self) -> str: ...      # a name in hw.registry.AUDIO_BACKENDS

    @property
    def gpio_backend(self) -> str: ...       # a name in hw.registry.CONTROL_BACKENDS
