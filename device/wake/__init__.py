"""On-device wake word detection (issue 17): `detector.WakeWordDetector` over pymicro-wakeword.

The call mode (`call_mode = "wake_word"`) feeds it the processed mic (after echo cancellation and
noise suppression) while no call is open; a `WakeDetection` starts a call.
"""
from __future__ import annotations

from device.wake.detector import BUILTIN_MODELS, WakeDetection, WakeWordDetector, WakeWordUnavailable

__all__ = ["BUILTIN_MODELS", "WakeDetection", "WakeWordDetector", "WakeWordUnavailable"]
