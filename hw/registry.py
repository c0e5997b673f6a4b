"""Backends by name: the one injection point between settings and hardware.

Real and fake backends are registered exactly alike (as gpiozero registers pin factories), and
imported lazily so that a host without `alsaaudio` can still run the fakes.
"""
from __future__ import annotations

import importlib
from typing import Any

from hw.audio import AudioBackend
from hw.controls import Controls
from hw.errors import UnknownBackend

AUDIO_BACKENDS: dict[str, str] = {
    "alsa": "hw.alsa:AlsaAudioBackend",
    "fake": "hw.fake_audio:FakeAudioBackend",
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


CONTROL_BACKENDS: dict[str, str] = {
    "gpiozero": "hw.gpio:GpioControls",          # real pins (lgpio on a Pi, or GPIOZERO_PIN_FACTORY)
    "mock": "hw.gpio:MockGpioControls",          # the same code on a private gpiozero MockFactory
    "keyboard": "hw.keyboard:KeyboardControls",  # terminal keys, LEDs drawn as a status line
    "none": "hw.controls:NoControls",            # headless: no buttons, LEDs only recorded
}


def controls_backend(name: str, **options: Any) -> Controls:
    """Create the buttons-and-LEDs backend registered as `name` with backend-specific options."""
    cls = _load(CONTROL_BACKENDS, "controls", name)
    controls: Controls = cls(**options)
    return controls
