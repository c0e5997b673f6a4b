"""The aarch64 user-mode environment the estimate runs in, built once into a cache outside git.

- an arm64 Debian 12 tree with only Python 3.11 and the C++ runtime, extracted by mmdebstrap
  (`--variant=extract`: nothing of it runs at build time, so no binfmt_misc registration is needed);
- the project's runtime dependencies as PyPI's aarch64 wheels, installed by the host's pip with
  `--platform` into one folder, at the versions the host's venv runs (the comparison with the host's
  bench is then between the same library builds); pyalsaaudio (an sdist) and lgpio are left out: the
  estimate runs the fake audio backend and no GPIO;
- insn_meter.so, the instruction-counting plugin, compiled against qemu-plugin.h from the Debian
  source package of the qemu-user that runs it (fetched with apt-get source through a private apt
  configuration under the cache, so the host's apt sources are not changed).

Programs run as `qemu-aarch64 -L ROOTFS -plugin insn_meter.so,... ROOTFS/usr/bin/python3.11`: QEMU
looks absolute paths up in ROOTFS first, so the guest Python finds its own standard library and
libc, and the repository (not in ROOTFS) is read from the host as it is.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tools import REPO

DEFAULT_CACHE: Final = Path(os.environ.get("ARM_ESTIMATE_CACHE", Path.home() / ".cache" / "atoms-appliance-arm"))
SUITE: Final = "bookworm"
GUEST_PYTHON: Final = "/usr/bin/python3.11"
ROOTFS_PACKAGES: Final = ("python3.11", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1")
# The runtime dependencies (pyproject.toml) that have aarch64 wheels and run under the fake backend.
GUEST_REQUIREMENTS: Final = ("websocket-client", "gpiozero", "webrtc-noise-gain", "pydantic",
                             "pydantic-settings", "livekit", "numpy", "soxr", "websockets")
WHEEL_PLATFORMS: Final = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64",
                          "manylinux_2_36_aarch64")
QEMU: Final = "/usr/bin/qemu-aarch64"


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ArmEnvironment:
    """Paths of the cached aarch64 environment, and the commands that build and use it (main thread)."""

    cache: Path = DEFAULT_CACHE

    @property
    def rootfs(self) -> Path:
        return self.cache / "rootfs"

    @property
    def site(self) -> Path:
        return self.cache / "site"

    @property
    def plugin(self) -> Path:
        return self.cache / "insn_meter.so"

    def ensure(self) -> None:
        """Build whatever of the environment is missing (a few minutes the first time)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        if not (self.rootfs / GUEST_PYTHON.lstrip("/")).exists():
            self._build_rootfs()
        requirements = self._pinned_requirements()
        stamp = self.site / ".requirements"
        if not stamp.exists() or stamp.read_text() != "\n".join(requirements):
            self._install_wheels(requirements)
            stamp.write_text("\n".join(requirements))
        source = Path(__file__).with_name("insn_meter.c")
        if not self.plugin.exists() or self.plugin.stat().st_mtime < source.stat().st_mtime:
            self._build_plugin(source)

    def _build_rootfs(self) -> None:
        partial = self.cache / "rootfs.partial"
        run(["rm", "-rf", str(partial)])
        run(["mmdebstrap", "--quiet", "--variant=extract", "--arch=arm64",
             "--include=" + ",".join(ROOTFS_PACKAGES), SUITE, str(partial), "http://deb.debian.org/debian"])
        partial.rename(self.rootfs)

    @staticmethod
    def _pinned_requirements() -> list[str]:
        """Each guest requirement at the version the host runs (so both run the same code)."""
        pinned = []
        for name in GUEST_REQUIREMENTS:
            try:
                pinned.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                pinned.append(name)
        return pinned

    def _install_wheels(self, requirements: list[str]) -> None:
        run(["rm", "-rf", str(self.site)])
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(self.site), *platforms,
             "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
             "--only-binary=:all:", *requirements])

    def _build_plugin(self, source: Path) -> None:
        header_dir = self._plugin_header_dir()
        run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-I", str(header_dir), "-o", str(self.plugin),
             str(source), "-lpthread"])

    def _plugin_header_dir(self) -> Path:
        """The folder holding qemu-plugin.h of the installed qemu-user's source package."""
        header_dir = self.cache / "qemu-plugin-include"
        if (header_dir / "qemu-plugin.h").exists():
            return header_dir
        apt = self.cache / "apt"
        for sub in ("lists/partial", "archives/partial", "src"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        (apt / "sources.list").write_text(
            f"deb-src http://deb.debian.org/debian {SUITE} main\n"
            f"deb-src http://deb.debian.org/debian-security {SUITE}-security main\n"
            f"deb-src http://deb.debian.org/debian {SUITE}-updates main\n")
        options = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
                   "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt}", "-o", "Debug::NoLocking=1"]
        version = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-user"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        run(["apt-get", *options, "-qq", "update"])
        run(["apt-get", *options, "source", "--download-only", f"qemu={version}"], cwd=apt / "src")
        orig = next((apt / "src").glob("qemu_*.orig.tar.*"))
        header_dir.mkdir(exist_ok=True)
        with tarfile.open(orig) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("include/qemu/qemu-plugin.h"))
            data = tar.extractfile(member)
            assert data is not None
            (header_dir / "qemu-plugin.h").write_bytes(data.read())
        return header_dir

    def python(self, meter_out: Path, *args: str) -> list[str]:
        """The command running the guest Python with `args` under the instruction meter."""
        return [QEMU, "-L", str(self.rootfs), "-plugin", f"{self.plugin},out={meter_out}",
                str(self.rootfs) + GUEST_PYTHON, *args]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with the guest's import path: the aarch64 wheels, then the repository."""
        env = dict(base)
        env["PYTHONPATH"] = f"{self.site}{os.pathsep}{REPO}"
        env.pop("VIRTUAL_ENV", None)
        env["PYTHONNOUSERSITE"] = "1"
        return env
