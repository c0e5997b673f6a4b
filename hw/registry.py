"""Backends by name: the one injection point between settings and hardware.

Real and fake backends are registered exactly alike (as gpiozero registers pin factories), and
imported lazily so that a host without `alsaaudio` can still run the fakes. Each registered class
builds itself from settings (`from_settings(settings)`, reading only the fields its Protocol in
`hw.settings` lists): `audio_backend_from_settings` and `controls_from_settings` are what the
service, the doctor and the demo use. `audio_backend(name, **options)` and
`controls_backend(name, **options)` make one with explicit options (tests, tools).
"""
from __future__ import annotations

import importlib
from typing import Any, Final

from hw.audio import AudioBackend
from hw.controls import Controls
from hw.errors import UnknownBackend
from hw.settings import HwSettings

AUDIO_BACKENDS: Final[dict[str, str]] = {
    "alsa": "hw.alsa:AlsaAudioBackend",
    "fake": "hw.fake_audio:FakeAudioBackend",
}

CONTROL_BACKENDS: Final[dict[str, str]] = {
    "gpiozero": "hw.gpio:GpioControls",          # real pins (lgpio on a Pi, or GPIOZERO_PIN_FACTORY)
    "mock": "hw.gpio:MockGpioControls",          # the same code on a private gpiozero MockFactory
    "keyboard": "hw.keyboard:KeyboardControls",  # terminal keys, LEDs drawn as a status line (`run --keys`)
    "none": "hw.controls:NoControls",            # headless: no buttons, LEDs only recorded
}


def _load(table: dict[str, str], kind: str, name: str) -> Any:
    try:
        target = table[name]
    except KeyError:
        raise UnknownBackend(f"unknown {kind} backend {name!r}; choose one of {sorted(table)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def audio_backend(name: str, **options: Any) -> AudioBackend:
    """Create the audio backend registered as `name` with backend-specific options."""
    cls = _load(AUDIO_BACKENDS, "audio", name)
    backend: AudioBackend = cls(**options)
    return backend


def audio_backend_from_settings(settings: HwSettings) -> AudioBackend:
    """The audio backend `settings.audio_backend` names, built from the settings it reads."""
    cls = _load(AUDIO_BACKENDS, "audio", settings.audio_backend)
    backend: AudioBackend = cls.from_settings(settings)
    return backend


def controls_backend(name: str, **options: Any) -> Controls:
    """Create the buttons-and-LEDs backend registered as `name` with backend-specific options."""
    cls = _load(CONTROL_BACKENDS, "controls", name)
    controls: Controls = cls(**options)
    return controls


def controls_from_settings(settings: HwSettings) -> Controls:
    """The buttons and LEDs `settings.gpio_backend` names, built from the settings they read.

    Real pins are claimed here: a busy or missing pin raises `DeviceUnavailable`.
    """
    cls = _load(CONTROL_BACKENDS, "controls", settings.gpio_backend)
    controls: Controls = cls.from_settings(settings)
    return controls
