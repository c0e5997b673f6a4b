"""Cached guest images and wheelhouses for the system test, built on the host at native speed.

An image (tests/system/image/build-image.sh) is keyed by the release, the recipe's files and the
host's extra CA certificates; a wheelhouse by the image and pyproject.toml. Both live under the
cache directory (ATOMS_SYSTEM_CACHE, default ~/.cache/atoms-appliance-system), outside git, so
a second run on the same machine reuses them; only the newest build of each release is kept.
Building needs root (mmdebstrap in root mode, mount, chroot): the test runs as root here and in CI.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
RECIPE: Final = Path(__file__).resolve().parent / "image"
DEFAULT_CACHE: Final = Path.home() / ".cache" / "atoms-appliance-system"
HOST_CAS: Final = Path("/usr/local/share/ca-certificates")
# What the wheelhouse holds besides the project's dependencies: lgpio (install.sh --lgpio yes;
# no wheel for Python 3.13, so it is built here with swig, at native speed) and the project's
# build backend, which pip needs to build the checkout with --no-index.
EXTRA_WHEELS: Final = ("lgpio>=0.2.2", "setuptools>=68", "wheel")
CHROOT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Release:
    """A Debian release the system test runs on."""

    name: str
    version: str
    python: str


RELEASES: Final = {
    "bookworm": Release("bookworm", "12", "3.11"),
    "trixie": Release("trixie", "13", "3.13"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ATOMS_SYSTEM_CACHE") or DEFAULT_CACHE)


@dataclass(frozen=True)
class Image:
    """One built guest: its tree (for chroots), disk, kernel and initrd."""

    release: Release
    directory: Path
    key: str
    built_seconds: float | None   # None: taken from the cache

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def disk(self) -> Path:
        return self.directory / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:12]


def _tree_bytes(root: Path) -> list[bytes]:
    parts: list[bytes] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts += [str(path.relative_to(root)).encode(), path.read_bytes()]
    return parts


def image_key(release: Release) -> str:
    cas = sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []
    return _digest([release.name.encode(), *_tree_bytes(RECIPE), *(p.read_bytes() for p in cas)])


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder per cache entry at a time (two test runs on one machine wait for each other)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ssh_key() -> Path:
    """The private key the harness logs into every guest with (generated once per cache)."""
    key = cache_dir() / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "atoms-systest",
                        "-f", str(key)], check=True)
    return key


def _drop_older(kind: str, release: Release, keep: Path) -> None:
    for old in (cache_dir() / kind).glob(f"{release.name}-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def ensure_image(release: Release, log: Path) -> Image:
    """The cached image of `release`, built first if the recipe changed (a few minutes)."""
    key = image_key(release)
    directory = cache_dir() / "images" / f"{release.name}-{key}"
    with _locked(f"image-{release.name}"):
        if (directory / "disk.img").is_file():
            return Image(release, directory, key, None)
        directory.parent.mkdir(parents=True, exist_ok=True)
        pubkey = ssh_key().with_suffix(".pub")
        start = time.monotonic()
        with open(log, "w") as out:
            result = subprocess.run([str(RECIPE / "build-image.sh"), release.name, str(directory), str(pubkey)],
                                    stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"building the {release.name} image failed (exit {result.returncode}); see {log}")
        _drop_older("images", release, directory)
        return Image(release, directory, key, time.monotonic() - start)


@contextlib.contextmanager
def guest_chroot(image: Image) -> Iterator[Path]:
    """The guest's userland at native speed: an overlay on the image's tree (changes are thrown
    away), with /proc, /sys, /dev and the host's DNS. Yields the root to `chroot` into."""
    work = Path(tempfile.mkdtemp(prefix=f"atoms-chroot-{image.release.name}-"))
    upper, scratch, root = work / "upper", work / "work", work / "root"
    for d in (upper, scratch, root):
        d.mkdir()
    mounted: list[Path] = []

    def mount(*args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        mounted.append(target)

    try:
        mount("-t", "overlay", "overlay", "-o",
              f"lowerdir={image.rootfs},upperdir={upper},workdir={scratch}", target=root)
        mount("-t", "proc", "proc", target=root / "proc")
        mount("--rbind", "/sys", target=root / "sys")
        mount("--rbind", "/dev", target=root / "dev")
        mount("-t", "tmpfs", "tmpfs", target=root / "dev" / "shm")
        resolv = root / "etc" / "resolv.conf"
        resolv.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", resolv)
        yield root
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", str(target)], check=False)
            if os.path.ismount(target):
                subprocess.run(["umount", "-l", "-R", str(target)], check=False)
        if not any(os.path.ismount(t) for t in mounted):
            shutil.rmtree(work, ignore_errors=True)


def in_chroot(root: Path, command: str, log: Path, env: dict[str, str] | None = None,
              timeout: float = 1800) -> None:
    """Run a shell command in the chroot with a clean environment (none of the host's pip
    settings), appending its output to `log`."""
    clean = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
    with open(log, "a") as out:
        out.write(f"$ {command}\n")
        out.flush()
        result = subprocess.run(["chroot", str(root), "/bin/sh", "-c", command], env=clean,
                                stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"in the chroot {root}, '{command}' failed (exit {result.returncode}); see {log}")


def project_requirements() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps: list[str] = data["project"]["dependencies"]
    return [*deps, *EXTRA_WHEELS]


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path
    built_seconds: float | None


def ensure_wheelhouse(image: Image, log: Path) -> Wheelhouse:
    """Wheels of every dependency for the guest's own Python, built in the guest's userland
    (pip from PyPI, sdists such as pyalsaaudio and lgpio compiled there)."""
    requirements = project_requirements()
    key = _digest([image.key.encode(), *(r.encode() for r in requirements)])
    directory = cache_dir() / "wheels" / f"{image.release.name}-{key}"
    with _locked(f"wheels-{image.release.name}"):
        if (directory / ".complete").is_file():
            return Wheelhouse(directory, None)
        start = time.monotonic()
        log.write_text("")
        with guest_chroot(image) as root:
            (root / "tmp" / "requirements.txt").write_text("\n".join(requirements) + "\n")
            # PYPI=1: lgpio's switch to compile its bundled C library in (as install.sh does).
            # wheel first: Debian 12's pip (23.0) builds sdists such as pyalsaaudio with
            # `setup.py bdist_wheel`, which needs it in the venv.
            in_chroot(root, "python3 -m venv /tmp/wheel-venv && /tmp/wheel-venv/bin/pip install -q "
                      "--disable-pip-version-check wheel && /tmp/wheel-venv/bin/pip wheel "
                      "--disable-pip-version-check --no-input --progress-bar off -w /tmp/wheelhouse "
                      "-r /tmp/requirements.txt", log, env={"PYPI": "1"})
            tmp = directory.with_name(directory.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(root / "tmp" / "wheelhouse", tmp)
        (tmp / ".complete").write_text("\n".join(requirements) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
        _drop_older("wheels", image.release, directory)
        return Wheelhouse(directory, time.monotonic() - start)
