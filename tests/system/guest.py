"""One QEMU guest: boot, power cut, reboot, and commands over ssh on a port forwarded to 127.0.0.1.

The disk is a qcow2 overlay on the cached image, so the image stays clean and a run starts from a
fresh machine. The wheelhouse reaches the guest read-only over virtio-9p (mounted at
/mnt/wheelhouse by the image's fstab). QEMU runs software emulation (TCG) unless KVM works here:
nested KVM on these machines never gets past the kernel's decompressor, so KVM is probed once
(a kernel that reaches its panic for want of a root file system within KVM_PROBE_SECONDS) and the
answer cached. `ATOMS_SYSTEM_ACCEL=tcg|kvm` skips the probe.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.system.images import Image, cache_dir, ssh_key

KVM_PROBE_SECONDS: Final = 25.0
BOOT_TIMEOUT: Final = float(os.environ.get("ATOMS_SYSTEM_BOOT_TIMEOUT", "420"))
GUEST_CPUS: Final = 2
GUEST_MEMORY_MB: Final = 2048
# nice for QEMU while developing on a shared machine (ATOMS_SYSTEM_NICE=10); CI need not.
NICE: Final = int(os.environ.get("ATOMS_SYSTEM_NICE", "0"))


class GuestError(AssertionError):
    """The guest did not do what the harness asked (boot, answer ssh, run a command)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kvm_usable(image: Image) -> bool:
    marker = cache_dir() / f"kvm-{os.uname().release}"
    if marker.exists():
        return marker.read_text().strip() == "yes"
    usable = False
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        console = marker.with_suffix(".console")
        try:
            subprocess.run(
                ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
                 "-no-reboot", "-display", "none", "-serial", f"file:{console}", "-kernel", str(image.kernel),
                 "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent rootwait=0"],
                timeout=KVM_PROBE_SECONDS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pass
        text = console.read_text(errors="replace") if console.exists() else ""
        usable = "Kernel panic" in text or "VFS:" in text
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("yes\n" if usable else "no\n")
    return usable


def accelerator(image: Image) -> str:
    choice = os.environ.get("ATOMS_SYSTEM_ACCEL", "auto")
    if choice in ("tcg", "kvm"):
        return choice
    return "kvm" if _kvm_usable(image) else "tcg"


@dataclass
class Guest:
    """A booted (or bootable) guest of one image; driven from the test's thread only."""

    image: Image
    wheelhouse: Path
    workdir: Path
    accel: str
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    boots: list[float] = field(default_factory=list)   # seconds from QEMU start to ssh, per boot

    @property
    def overlay(self) -> Path:
        return self.workdir / "disk.qcow2"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    def create_disk(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.disk),
                        str(self.overlay)], check=True)

    def qemu_command(self) -> list[str]:
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else \
            ["-accel", "tcg,thread=multi", "-cpu", "max"]
        cmd = [
            "qemu-system-x86_64", *accel, "-smp", str(GUEST_CPUS), "-m", str(GUEST_MEMORY_MB),
            "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", "root=/dev/vda rw console=ttyS0,115200 loglevel=4 systemd.show_status=auto",
            # writeback (not unsafe): the guest's flushes reach the host disk, so that killing
            # QEMU is a power cut with the guest's fsync()ed data intact, as on real hardware.
            "-drive", f"file={self.overlay},if=virtio,format=qcow2,cache=writeback,discard=unmap",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-rng-pci",
            "-virtfs", f"local,path={self.wheelhouse},mount_tag=wheelhouse,security_model=none,readonly=on",
            "-serial", f"file:{self.console}",
        ]
        return ["nice", "-n", str(NICE), *cmd] if NICE else cmd

    def boot(self) -> float:
        """Start QEMU and wait for ssh; returns the seconds it took."""
        if self.process is not None and self.process.poll() is None:
            raise GuestError("the guest is already running")
        self._forget_ssh()
        with open(self.console, "ab") as console:
            console.write(f"\n===== boot {len(self.boots) + 1} =====\n".encode())
        start = time.monotonic()
        self.process = subprocess.Popen(self.qemu_command(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=open(self.workdir / "qemu.err", "ab"))
        self.wait_ssh(start)
        took = time.monotonic() - start
        self.boots.append(took)
        return took

    def wait_ssh(self, start: float) -> None:
        while time.monotonic() - start < BOOT_TIMEOUT:
            if self.process is not None and self.process.poll() is not None:
                raise GuestError(f"QEMU exited with {self.process.returncode}; see {self.workdir / 'qemu.err'}")
            if self.run("true", timeout=20, check=False, connect_timeout=5).returncode == 0:
                return
            time.sleep(2)
        raise GuestError(f"no ssh after {BOOT_TIMEOUT:.0f} s; console: {self.console}")

    def power_cut(self) -> None:
        """Kill QEMU: no shutdown, no sync, as when the power goes."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._forget_ssh()

    def wait_down(self, timeout: float = 180) -> None:
        """After `systemctl poweroff` (QEMU exits) in the guest."""
        assert self.process is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.power_cut()
        self._forget_ssh()

    def reboot(self) -> float:
        """`systemctl reboot` as a person would; QEMU stays up. Returns seconds to ssh."""
        self.run("systemctl reboot", check=False, timeout=30)
        start = time.monotonic()
        self._forget_ssh()
        # Wait for the old sshd to go away before waiting for the new one.
        deadline = start + 120
        while time.monotonic() < deadline and self.run("true", timeout=10, check=False,
                                                       connect_timeout=3).returncode == 0:
            time.sleep(1)
            self._forget_ssh()
        self.wait_ssh(start)
        took = time.monotonic() - start
        self.boots.append(took)
        return took

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self._forget_ssh()
            return
        self.run("systemctl poweroff", check=False, timeout=20)
        self.wait_down(120)

    # -- ssh --------------------------------------------------------------------------------------
    def _control_path(self, user: str) -> Path:
        return self.workdir / f"ssh-{user}"

    def logout(self, user: str) -> None:
        """End `user`'s shared ssh connection: the next command logs in anew (new groups apply)."""
        path = self._control_path(user)
        if path.exists():
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={path}", "x"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)
            path.unlink(missing_ok=True)

    def _forget_ssh(self) -> None:
        for user in ("root", "tester", "visitor"):
            self.logout(user)

    def ssh_command(self, user: str = "root", connect_timeout: int = 10) -> list[str]:
        return [
            "ssh", "-q", "-i", str(ssh_key()), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8",
            # One connection per user, reused: a new key exchange costs seconds under emulation.
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_path(user)}",
            "-o", "ControlPersist=300", f"{user}@127.0.0.1",
        ]

    def run(self, command: str, user: str = "root", timeout: float = 120, check: bool = True,
            input: bytes | None = None, connect_timeout: int = 10) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as `user` (a login shell's environment)."""
        try:
            result = subprocess.run([*self.ssh_command(user, connect_timeout), command], input=input,
                                    capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            if check:
                raise GuestError(f"as {user}: {command!r} did not finish in {timeout:.0f} s") from exc
            return subprocess.CompletedProcess(command, 124, "", "timeout")
        out = subprocess.CompletedProcess(command, result.returncode, result.stdout.decode(errors="replace"),
                                          result.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise GuestError(f"as {user}: {command!r} exited {out.returncode}\nstdout: {out.stdout[-3000:]}"
                             f"\nstderr: {out.stderr[-3000:]}")
        return out

    def sh(self, command: str, **kwargs: object) -> str:
        """`run` and return stdout stripped."""
        return self.run(command, **kwargs).stdout.strip()  # type: ignore[arg-type]

    def put(self, data: bytes, path: str, user: str = "root", mode: str = "0644") -> None:
        self.run(f"install -D -m {mode} /dev/stdin {shlex.quote(path)}", user=user, input=data)
