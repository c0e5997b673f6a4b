"""What ALSA can see: sound cards and PCM names, for `atoms-appliance devices` and bug reports.

Names come from pyalsaaudio (`cards`, `card_name`, `pcms`). pyalsaaudio does not expose the
descriptions alsa-lib keeps for each PCM ("USB PnP Sound Device, USB Audio / Direct hardware
device without any conversions"), which are what tells `hw:` from `plughw:` to a user, so those
are read with ctypes from the same libasound that pyalsaaudio uses; without it they are left out.
Nothing here raises on a machine without sound cards: problems are listed in `errors`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass, field
from typing import Final

import alsaaudio

log = logging.getLogger(__name__)

LIBASOUND: Final = "libasound.so.2"


@dataclass(frozen=True)
class CardInfo:
    """One sound card: its index (`hw:N`), id (`hw:CARD=id`), short and long name."""

    index: int
    id: str
    name: str
    long_name: str


@dataclass(frozen=True)
class PcmInfo:
    """One PCM name usable as `capture_device`/`playback_device`, with alsa-lib's description."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class DeviceListing:
    """Cards and PCMs as alsa-lib sees them now (built by `list_devices`, any thread)."""

    cards: list[CardInfo] = field(default_factory=list)
    capture: list[PcmInfo] = field(default_factory=list)
    playback: list[PcmInfo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _pcm_descriptions() -> dict[str, str]:
    """PCM name -> description from alsa-lib's name hints; empty when they cannot be read."""
    try:
        lib = ctypes.CDLL(LIBASOUND)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError as exc:
        log.debug("no %s for PCM descriptions: %s", LIBASOUND, exc)
        return {}
    hints_p = ctypes.POINTER(ctypes.c_void_p)
    lib.snd_device_name_hint.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(hints_p)]
    lib.snd_device_name_hint.restype = ctypes.c_int
    lib.snd_device_name_get_hint.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.snd_device_name_get_hint.restype = ctypes.c_void_p  # malloc'd: we must free it
    lib.snd_device_name_free_hint.argtypes = [hints_p]
    libc.free.argtypes = [ctypes.c_void_p]

    def get(hint: int, key: bytes) -> str:
        ptr = lib.snd_device_name_get_hint(hint, key)
        if not ptr:
            return ""
        try:
            return ctypes.string_at(ptr).decode(errors="replace")
        finally:
            libc.free(ptr)

    hints = hints_p()
    if lib.snd_device_name_hint(-1, b"pcm", ctypes.byref(hints)) < 0:
        return {}
    out: dict[str, str] = {}
    try:
        i = 0
        while hints[i]:
            name = get(hints[i], b"NAME")
            if name:
                out[name] = " / ".join(line.strip() for line in get(hints[i], b"DESC").splitlines())
            i += 1
    finally:
        lib.snd_device_name_free_hint(hints)
    return out


def list_devices() -> DeviceListing:
    """Ask alsa-lib for cards and PCMs. Never raises ALSA errors; a machine without cards is fine."""
    listing = DeviceListing()
    try:
        indexes = alsaaudio.card_indexes()
        ids = alsaaudio.cards()  # same snd_card_next() walk as card_indexes(), same order
    except alsaaudio.ALSAAudioError as exc:
        listing.errors.append(f"listing sound cards: {exc}")
        indexes, ids = [], []
    for index, card_id in zip(indexes, ids):
        try:
            name, long_name = alsaaudio.card_name(index)
        except alsaaudio.ALSAAudioError as exc:
            listing.errors.append(f"card {index}: {exc}")
            name = long_name = ""
        listing.cards.append(CardInfo(index, card_id, name, long_name))
    try:
        descriptions = _pcm_descriptions()
    except (OSError, AttributeError, ValueError) as exc:  # a best-effort extra: never break the listing
        log.debug("PCM descriptions unavailable: %s", exc)
        descriptions = {}
    for direction, target in ((alsaaudio.PCM_CAPTURE, listing.capture), (alsaaudio.PCM_PLAYBACK, listing.playback)):
        try:
            names = alsaaudio.pcms(direction)
        except alsaaudio.ALSAAudioError as exc:
            listing.errors.append(f"listing PCMs: {exc}")
            names = []
        target.extend(PcmInfo(name, descriptions.get(name, "")) for name in names)
    return listing


def _pcm_table(title: str, pcms: list[PcmInfo]) -> list[str]:
    lines = [title]
    if not pcms:
        return [*lines, "  (none)"]
    width = max(len(p.name) for p in pcms)
    lines += [f"  {p.name:<{width}}  {p.description}".rstrip() for p in pcms]
    return lines


def format_device_listing(listing: DeviceListing) -> str:
    """A human table of `listing`, with hints on which names to put in the settings."""
    lines = ["Sound cards:"]
    if listing.cards:
        for card in listing.cards:
            lines.append(f"  {card.index:>2}  {card.id:<12}  {card.name}  ({card.long_name})")
    else:
        lines.append("  (no sound cards found: is the USB sound card plugged in? see `ls /dev/snd`)")
    lines.append("")
    lines += _pcm_table("Capture PCMs (for capture_device):", listing.capture)
    lines.append("")
    lines += _pcm_table("Playback PCMs (for playback_device):", listing.playback)
    lines += [
        "",
        "Tip: plughw:CARD=<id>,DEV=0 and default convert rate and format in alsa-lib;",
        "hw: names convert nothing and fail when the card cannot do the rate we need.",
    ]
    if listing.errors:
        lines += ["", "Problems:", *(f"  {error}" for error in listing.errors)]
    return "\n".join(lines) + "\n"
