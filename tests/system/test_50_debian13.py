"""Debian 13 and Python 3.13: `make demo` and `make test` from a clone, in the guest's own userland.

They run in a chroot of the trixie image at native speed (the whole suite under emulation would
take an hour); the kernel is the host's, everything else (Python 3.13, gcc, alsa-lib, espeak-ng,
pip's wheels for 3.13) is Debian 13's. Only on trixie: Debian 12 is what `make test` runs on in CI.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.system.conftest import Report, selected_releases
from tests.system.images import RELEASES, REPO, cache_dir, ensure_image, guest_chroot, in_chroot

ENABLED_HERE = "trixie" in selected_releases() if os.environ.get("ATOMS_TEST_SYSTEM") == "1" else True


@pytest.mark.skipif(not ENABLED_HERE, reason="Debian 13 is not among ATOMS_SYSTEM_RELEASES")
def test_make_demo_and_make_test_on_debian_13(report: Report) -> None:
    release = RELEASES["trixie"]
    log = cache_dir() / "runs" / "trixie-make-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    image = ensure_image(release, cache_dir() / "runs" / "trixie-image-build.log")
    log.write_text("")
    with guest_chroot(image) as root:
        # A clone, as a person starts: only what git tracks (plus this checkout's new files).
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, capture_output=True, check=True).stdout
        target = root / "home" / "tester" / "atoms-appliance"
        target.mkdir(parents=True)
        subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=REPO, input=files, check=True,
                       stdout=open(root / "tmp" / "checkout.tar", "wb"))
        subprocess.run(["tar", "-xf", str(root / "tmp" / "checkout.tar"), "-C", str(target)], check=True)
        in_chroot(root, "python3 --version && cd /home/tester/atoms-appliance && make demo", log, timeout=900)
        in_chroot(root, "cd /home/tester/atoms-appliance && make test", log, timeout=1800)
    text = log.read_text()
    match = re.findall(r"^(\d+ passed.*)$", text, re.MULTILINE)
    report.add("trixie", "make_test", match[-1] if match else "?")
    assert "Python 3.13" in text
    assert match, text[-3000:]
