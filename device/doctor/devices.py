"""Sound devices for `doctor` and `devices`: open checks, who holds a busy PCM, and the PCM table.

A busy ALSA device (EBUSY) is useless to report without its holder, so `find_pcm_holders` scans
`/proc/*/fd` for links to `/dev/snd/pcmC*D*c` (capture) or `...p` (playback) and names the pid and
command. Other users' processes are invisible to a non-root user: the result says so.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from device.doctor.core import CheckResult, describe_exception
from hw.alsa_devices import DeviceListing, PcmInfo
from hw.audio import AudioBackend
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)

Direction = Literal["capture", "playback"]
PCM_NODE: Final = re.compile(r"^/dev/snd/pcmC(\d+)D(\d+)([cp])$")


@dataclass(frozen=True)
class PcmHolder:
    """A process with an ALSA PCM device node open (an immutable value)."""

    pid: int
    command: str
    node: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command}) on {self.node}"


def find_pcm_holders(direction: Direction, proc_root: Path = Path("/proc"),
                     own_pid: int | None = None) -> tuple[list[PcmHolder], bool]:
    """Processes holding a PCM node of `direction`; and whether some processes could not be read."""
    suffix = "c" if direction == "capture" else "p"
    own = os.getpid() if own_pid is None else own_pid
    holders: list[PcmHolder] = []
    hidden = False
    try:
        entries = sorted((p for p in proc_root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    except OSError:
        return [], True
    for proc in entries:
        pid = int(proc.name)
        if pid == own:
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except PermissionError:
            hidden = True
            continue
        except OSError:
            continue   # the process ended while we looked
        nodes = set()
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            match = PCM_NODE.match(target)
            if match and match.group(3) == suffix:
                nodes.add(target)
        if nodes:
            try:
                command = (proc / "comm").read_text().strip()
            except OSError:
                command = "?"
            holders += [PcmHolder(pid, command, node) for node in sorted(nodes)]
    return holders, hidden


def _device_name(backend: AudioBackend, direction: Direction) -> str:
    return str(getattr(backend, f"{direction}_device", f"{backend.name}:{direction}"))


def check_audio_device(direction: Direction, backend: AudioBackend, sample_rate: int, period_ms: int = 10,
                       buffer_periods: int = 4, proc_root: Path = Path("/proc")) -> CheckResult:
    """Open the mic (or speaker) at the rate the service needs, then close it again."""
    name = "microphone" if direction == "capture" else "speaker"
    device = _device_name(backend, direction)
    setting = f"ATOMS_{direction.upper()}_DEVICE"
    frames = sample_rate * period_ms // 1000
    opened = backend.capture(sample_rate, frames) if direction == "capture" else \
        backend.playback(sample_rate, frames, buffer_periods)
    try:
        fmt = opened.open()
    except DeviceUnavailable as exc:
        return _unavailable(name, direction, device, setting, sample_rate, exc, proc_root)
    except OSError as exc:   # e.g. a fake device's WAV file that cannot be read
        return CheckResult.fail(name, f"{device!r}: {describe_exception(exc)}",
                                f"check {setting} (and ATOMS_FAKE_* files with the fake backend)")
    finally:
        opened.close()
    return CheckResult.passed(name, f"{device!r} opens for {direction} at {sample_rate} Hz mono, period "
                              f"{fmt.period_frames} frames, buffer {fmt.buffer_frames}",
                              device=device, sample_rate=sample_rate)


def _unavailable(name: str, direction: Direction, device: str, setting: str, rate: int,
                 exc: DeviceUnavailable, proc_root: Path) -> CheckResult:
    code = getattr(exc, "errno", None)
    reason = exc.reason
    if code == errno.EBUSY or "busy" in reason:
        holders, hidden = find_pcm_holders(direction, proc_root)
        if holders:
            who = "; ".join(str(h) for h in holders)
            ours = any("atoms" in h.command or "python" in h.command for h in holders)
            fix = ("stop the service first (`sudo systemctl stop atoms-appliance`), then run doctor again"
                   if ours else f"stop {holders[0].command} (pid {holders[0].pid}), or give both programs "
                   "a shared PCM (dsnoop for a mic, dmix for a speaker, or PipeWire's ALSA plugin)")
            return CheckResult.fail(name, f"{device!r} is busy: held by {who}", fix,
                                    holders=[asdict(h) for h in holders])
        unseen = " (other users' processes are hidden: run doctor as root to see them)" if hidden else ""
        return CheckResult.fail(name, f"{device!r} is busy, held by another program{unseen}",
                                "stop the program that plays or records (`fuser -v /dev/snd/*` names it)")
    if code in (errno.EACCES, errno.EPERM) or "permission" in reason:
        return CheckResult.fail(name, f"{device!r}: {reason}", "add the service user to the 'audio' group")
    if "not found" in reason or code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return CheckResult.fail(name, f"{device!r} not found ({reason.split(';')[0]})",
                                f"pick a {direction} PCM from `atoms-appliance devices` and set {setting}")
    if "Hz" in reason or "mono" in reason or code == errno.EINVAL:
        return CheckResult.fail(name, f"{device!r} cannot {direction} at {rate} Hz mono: {reason}",
                                f"use a converting PCM (default or plughw:CARD=<id>,DEV=0) in {setting}")
    return CheckResult.fail(name, f"{device!r}: {reason}", f"check the device and {setting}")


# -- the PCM table of `atoms-appliance devices` -------------------------------------------------------
# Suitability by PCM type: (capture, playback, note). "ok" suits, "maybe" only if the card does the
# rate natively, "no" is listed by alsa-lib but useless for a voice terminal.
_RULES: Final[dict[str, tuple[str, str, str]]] = {
    "default": ("ok", "ok", "recommended: alsa-lib converts rate and format"),
    "sysdefault": ("ok", "ok", "the card's default: converts rate and format"),
    "plughw": ("ok", "ok", "converts rate and format; one program at a time"),
    "hw": ("maybe", "maybe", "no conversion: only if the card does the rate in mono natively"),
    "dsnoop": ("ok", "no", "shared mic (several programs may record)"),
    "dmix": ("no", "ok", "shared speaker (several programs may play)"),
    "pipewire": ("ok", "ok", "through PipeWire: shared, adds latency"),
    "pulse": ("ok", "ok", "through PulseAudio: shared, adds latency"),
    "null": ("no", "no", "silence: for tests only"),
    "front": ("no", "ok", "the card's front output"),
    "iec958": ("no", "no", "digital output (S/PDIF)"),
    "hdmi": ("no", "no", "HDMI output: no conversion, usually not mono"),
    "usbstream": ("no", "no", "not a PCM for applications"),
}
# alsa-lib lists these plugin types as PCMs although they only work with a configured slave.
_TEMPLATES: Final = frozenset({"lavrate", "samplerate", "speexrate", "jack", "oss", "speex", "upmix", "vdownmix"})


def pcm_suitability(name: str) -> tuple[str, str, str]:
    """(capture, playback, note) for a PCM name, from its type (the part before ':')."""
    kind = name.split(":", 1)[0]
    if kind in _TEMPLATES:
        return "no", "no", "an alsa-lib plugin that needs a configured slave"
    if kind.startswith("surround"):
        return "no", "no", "multi-channel output"
    if kind in _RULES:
        return _RULES[kind]
    return "maybe", "maybe", "defined in an ALSA config: `atoms-appliance doctor` tries it"


def format_devices(listing: DeviceListing, capture_device: str | None = None,
                   playback_device: str | None = None) -> str:
    """Cards, then one table of PCMs marking which suit the mic and which the speaker."""
    lines = ["Sound cards:"]
    if listing.cards:
        lines += [f"  {c.index:>2}  {c.id:<12}  {c.name}  ({c.long_name})" for c in listing.cards]
    else:
        lines.append("  (no sound cards found: is the USB sound card plugged in? see `ls /dev/snd`)")
    names: dict[str, PcmInfo] = {}
    for pcm in [*listing.capture, *listing.playback]:
        names.setdefault(pcm.name, pcm)
    capture_names = {p.name for p in listing.capture}
    playback_names = {p.name for p in listing.playback}
    lines += ["", "PCMs (put a name in capture_device / playback_device):",
              "  mic/spk: ok = suits, maybe = only if the card does the rate natively, no = not for this, "
              "- = not offered", ""]
    width = max([len(n) for n in names] + [4])
    lines.append(f"  {'mic':<5} {'spk':<5} {'name':<{width}}  note")
    for name, pcm in names.items():
        capture, playback, note = pcm_suitability(name)
        capture = capture if name in capture_names else "-"
        playback = playback if name in playback_names else "-"
        marks = [label for label, configured in (("capture_device", capture_device),
                                                 ("playback_device", playback_device)) if configured == name]
        suffix = f"  <- {', '.join(marks)}" if marks else ""
        lines.append(f"  {capture:<5} {playback:<5} {name:<{width}}  {note}{suffix}")
        if pcm.description:
            lines.append(f"  {'':<11} {'':<{width}}  ({pcm.description})")
    if not names:
        lines.append("  (none)")
    for label, configured, known in (("capture_device", capture_device, capture_names),
                                     ("playback_device", playback_device, playback_names)):
        if configured and configured not in known:
            lines.append(f"Note: {label} {configured!r} is not in this list; alsa-lib may still accept it "
                         "(`atoms-appliance doctor` opens it).")
    lines += ["", "Tip: plughw:CARD=<id>,DEV=0 and default convert rate and format in alsa-lib;",
              "hw: names convert nothing and fail when the card cannot do the rate we need."]
    if listing.errors:
        lines += ["", "Problems:", *(f"  {error}" for error in listing.errors)]
    return "\n".join(lines) + "\n"
