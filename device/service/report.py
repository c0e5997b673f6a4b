"""What the service reports about itself: the `ctl status` snapshot, the counters and the stats file.

Read on the main thread from the service's parts (each part's own `counters()` snapshot where it
has one); kept apart from the supervisor so that the supervisor is the event loop and the actions,
and the report is one place to read for what status and stats contain.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Final

from device.audio.formats import FRAME_MS, UPLINK_CHUNK_MS
from device.core.events import CallState, MachineState
from device.service.stats import rss_mb

if TYPE_CHECKING:
    from device.service.supervisor import ApplianceService

# The session's own error is shown only while the call is in trouble: once it works it is history.
SESSION_TROUBLE: Final = frozenset({CallState.CONNECTING, CallState.RECONNECTING, CallState.AUTH_ERROR})


def describe_devices(svc: ApplianceService) -> dict[str, Any]:
    """What the service holds, for `ctl status` and `doctor` (which cannot open them while we run)."""
    s = svc.settings
    pins = dict(getattr(svc.controls, "pins", {}))
    factory = getattr(svc.controls, "factory", None)
    gpio = {"backend": s.gpio_backend, "factory": type(factory).__name__ if factory is not None else None,
            "pins": pins, "fault": svc.gpio_fault}
    return {"backend": s.audio_backend, "microphone": s.capture_device, "speaker": s.playback_device,
            "gpio": gpio}


def status_text(state: MachineState, listening_for: str | None = None) -> str:
    """The one-line STATUS= for systemd: the call state, flags, the wake word it listens for (when
    it does) and lost devices."""
    flags = [f for f, on in (("muted", state.muted), ("agent speaking", state.agent_speaking),
                             ("talking", state.talking)) if on]
    if listening_for is not None:
        flags.append(f"listening for {listening_for}")
    faults = [f"{d} lost" for d in sorted(state.hardware_faults)]
    return ", ".join([state.call.value.replace("_", " "), *flags, *faults])


def status(svc: ApplianceService) -> dict[str, Any]:
    """The `ctl status` snapshot (never contains the key)."""
    s, c = svc.state, svc.session
    return {
        "call_state": s.call.value, "muted": s.muted, "agent_speaking": s.agent_speaking,
        "talking": s.talking, "call_mode": svc.config.mode.value,
        "wake_word": svc.wake.status(),   # wake_word mode: model, listening, detections; else None
        "hardware_faults": sorted(s.hardware_faults), "session_id": c.session_id,
        "call_id": c.call_id, "link": c.state.value, "sample_rate": svc.pipeline.stream_format.rate,
        "volume": svc.volume.level,
        "volume_control": "hardware" if svc.volume.mixer is not None else "software",
        # The session's own error only while it is not up: once a call works again it is history.
        "last_error": s.last_error or (c.last_error if s.call in SESSION_TROUBLE else None),
        "mute_saved": svc.persist.unsaved is None,
        "last_call": svc.last_call, "timers": svc.timers.remaining(),
        "leds": {"status": svc.leds.status.value, "mute": svc.leds.mute,
                 "speaking": svc.leds.speaking, "indicator": svc.leds.indicator.value},
        "devices": svc._devices, "pid": os.getpid(), "echo": svc.duplex_watch.status(),
        # The CPUs systemd's CPUAffinity= gave us (device/service/cpu.py).
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "counters": counters(svc),
    }


def counters(svc: ApplianceService) -> dict[str, Any]:
    """Every counter of every part, flat (nested only for per-reason and per-kind counts)."""
    c = svc.session.counters()
    return {
        **svc.pipeline.counters(),
        "chunks_sent": c.chunks_sent,
        "uplink_dropped_chunks": svc.uplink.dropped_chunks,
        "bytes_up": c.bytes_up, "bytes_down": c.bytes_down,
        "connects": c.connects, "reconnects": c.reconnects, "sessions": c.sessions,
        "send_errors": c.send_errors, "auth_rejections": c.auth_rejections,
        "server_errors": c.server_errors, "stale_chunks": c.stale_chunks,
        "outage_recordings_skipped": svc.dumper.skipped_outages if svc.dumper is not None else 0,
        "malformed": c.malformed,
        "jitter_overflow_bytes": svc.jitter.overflow_bytes,
        "discarded_agent_bytes": c.discarded_audio_bytes,
        "capture_thread_restarts": svc.audio_watch.restarts["capture"],
        "playback_thread_restarts": svc.audio_watch.restarts["playback"],
        "dropped_events": svc.dropped_events,
        "event_subscribers": svc.hub.subscribers,
        "event_subscribers_dropped": svc.hub.dropped_subscribers,
        "first_words_frames_sent": svc.pipeline.preroll.sent_frames,
        "first_words_frames_dropped": svc.pipeline.preroll.dropped_frames,
        **svc.wake.counters(),
        "volume_mixer_errors": svc.volume.mixer_errors,
        "texts_sent": c.texts_sent, "calls_ended": dict(svc.calls_ended),
        "conversations_saved": svc.saver.store.saved if svc.saver is not None else 0,
        "conversation_save_failures": svc.saver.failed if svc.saver is not None else 0,
        "mute_save_failures": svc.persist.saves.failures,
        "stats_write_failures": svc.stats_writes.failures,
        "control_clients": svc.control.clients_now,
        **{f"control_{kind}": n for kind, n in svc.control.counters.items()},
    }


def stats(svc: ApplianceService) -> dict[str, Any]:
    """The stats file's content: the headline figures, latency percentiles, RSS and all counters."""
    flat = counters(svc)
    latency = svc.session.counters().capture_to_send_ms
    return {
        "uptime_s": round(time.monotonic() - svc.started_at, 1),
        "call_state": svc.state.call.value,
        "frames_captured": flat["frames_captured"],
        "frames_sent": flat["chunks_sent"] * (UPLINK_CHUNK_MS // FRAME_MS),
        "frames_dropped": flat["uplink_dropped_chunks"] * (UPLINK_CHUNK_MS // FRAME_MS),
        "bytes_up": flat["bytes_up"], "bytes_down": flat["bytes_down"],
        "reconnects": flat["reconnects"], "malformed": flat["malformed"],
        "underruns": flat["playback_underruns"], "overruns": flat["capture_overruns"],
        "capture_to_send_ms": latency,
        "interruption_to_silence_ms": svc.pipeline.flush_latency.percentiles_ms(0.5, 0.99),
        "rss_mb": rss_mb(), "last_call": svc.last_call, "counters": flat,
    }
