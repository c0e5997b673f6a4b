"""The machines atoms-appliance runs on, and the one-line refusal for every other one.

The one list of supported platforms: deploy/install.sh and the Makefile run this file by its path
(`python3 device/platform_support.py "$(uname -m)" "$(dpkg --print-architecture)"`: exit 0, or 78
with the reason on stderr) before they install anything, and the command line (`atoms-appliance run`, `demo`, `doctor`) asks `unsupported()` before
it starts. So it uses the standard library only and imports nothing of the package.

Why 64-bit only: livekit (the echo canceller's library), webrtc-noise-gain, numpy and soxr
publish no wheels for 32-bit ARM on PyPI, and livekit's native core links a prebuilt libwebrtc
that exists for x86_64 and aarch64 only (livekit/rust-sdks' webrtc-sys build rejects any other
target_arch), so on 32-bit Raspberry Pi OS (armhf) `pip install` fails part way. The probe looks at the userland (this Python's pointer
width), not the kernel: 32-bit Raspberry Pi OS on a Pi 3, 4 or Zero 2 W runs a 64-bit kernel, so
`uname -m` says aarch64 there while every program, pip included, is 32-bit.
"""
from __future__ import annotations

import os
import platform
import struct
import sys
from collections.abc import Mapping
from typing import Final

# Python's machine name -> the Debian architecture of the same userland.
SUPPORTED: Final = {"x86_64": "amd64", "aarch64": "arm64"}
ALIASES: Final = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv6l", "i386": "i686"}
REQUIREMENT: Final = "64-bit Raspberry Pi OS or Debian arm64 (aarch64), or Debian amd64 (x86_64)"
# Replaces the probe's answer: for tests, and for checking what an image for another board would get.
MACHINE_ENV: Final = "ATOMS_PLATFORM_MACHINE"
EXIT_UNSUPPORTED: Final = 78   # EX_CONFIG, as for every configuration the service cannot run with


def userland_machine(environ: Mapping[str, str] | None = None) -> str:
    """The machine this Python's programs are built for: `platform.machine()` corrected for a
    32-bit userland on a 64-bit kernel, or the `ATOMS_PLATFORM_MACHINE` override."""
    env = os.environ if environ is None else environ
    override = env.get(MACHINE_ENV, "").strip()
    machine = (override or platform.machine()).lower()
    machine = ALIASES.get(machine, machine)
    if not override and struct.calcsize("P") == 4:
        machine = {"aarch64": "armv7l", "armv8l": "armv7l", "x86_64": "i686"}.get(machine, machine)
    return machine or "unknown"


def unsupported(machine: str | None = None) -> str | None:
    """None on a supported platform, else one line naming the platform and the requirement."""
    machine = userland_machine() if machine is None else ALIASES.get(machine.lower(), machine.lower())
    if machine in SUPPORTED:
        return None
    what = " (a 32-bit ARM userland, such as 32-bit Raspberry Pi OS)" if machine.startswith("arm") else ""
    return (f"unsupported platform: {machine}{what}; atoms-appliance needs {REQUIREMENT}: "
            f"livekit, webrtc-noise-gain, numpy and soxr have no {machine} wheels on PyPI (a pip install "
            f"would fail part way)")


def check(probed: list[str], environ: Mapping[str, str] | None = None) -> str | None:
    """The refusal for the first unsupported machine among this Python's userland and `probed`
    (what the caller's own probes said: `uname -m`, `dpkg --print-architecture`), or None. With
    ATOMS_PLATFORM_MACHINE set, that alone is checked."""
    env = os.environ if environ is None else environ
    machines = [userland_machine(env)]
    if not env.get(MACHINE_ENV, "").strip():
        machines += [m for m in probed if m.strip()]
    for machine in machines:
        reason = unsupported(machine)
        if reason is not None:
            return reason
    return None


def main(argv: list[str] | None = None) -> int:
    """`python3 device/platform_support.py [PROBED...]`: exit 0, or print the reason and exit 78."""
    reason = check(sys.argv[1:] if argv is None else argv)
    if reason is None:
        return 0
    print(reason, file=sys.stderr)
    return EXIT_UNSUPPORTED


if __name__ == "__main__":
    sys.exit(main())
