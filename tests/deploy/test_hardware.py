"""Hardware profiles, the wiring diagram and the hardware guide stay consistent and valid."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROFILES_DIR = REPO / "deploy" / "hardware"
PROFILES = sorted(p.name for p in PROFILES_DIR.iterdir() if p.is_dir())
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")


def test_the_four_profiles_exist() -> None:
    assert PROFILES == ["i2s-mems-max98357a", "respeaker-2mic", "usb-mic-analog-speaker",
                        "usb-speakerphone"]
    for name in PROFILES:
        for f in ("asound.conf", "config.txt", "config.toml", "README.md"):
            assert (PROFILES_DIR / name / f).is_file(), f"{name}/{f}"


@pytest.mark.parametrize("name", PROFILES)
def test_asound_conf_addresses_cards_by_name(name: str) -> None:
    text = (PROFILES_DIR / name / "asound.conf").read_text(encoding="utf-8")
    # install.sh recognises its own file by this first line (to back up anyone else's).
    assert text.startswith(f"# atoms-appliance hardware profile: {name}\n")
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "pcm.atoms_capture" in code and "pcm.atoms_playback" in code
    cards = re.findall(r"CARD=([^,\"\s]+)", code)
    assert cards, "no CARD= reference"
    assert all(not c.isdigit() for c in cards), cards
    assert not re.search(r"\b(plug)?hw:\d", code), "card addressed by number"
    assert not re.search(r"^\s*card\s+\d+\s*$", code, re.MULTILINE), "ctl card addressed by number"


@pytest.mark.skipif(shutil.which("aplay") is None or not SYSTEM_ALSA_CONF.exists(),
                    reason="alsa-utils is missing (apt-get install alsa-utils)")
@pytest.mark.parametrize("name", PROFILES)
def test_asound_conf_parses(name: str) -> None:
    """alsa-lib itself reads the file: a syntax error shows as 'ALSA lib ...' on stderr."""
    conf = PROFILES_DIR / name / "asound.conf"
    result = subprocess.run(["aplay", "-L"], capture_output=True, text=True, timeout=30, check=False,
                            env={"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}", "PATH": "/usr/bin:/bin"})
    assert "ALSA lib" not in result.stderr, result.stderr
    names = result.stdout.split()
    assert "atoms_capture" in names and "atoms_playback" in names


@pytest.mark.parametrize("name", PROFILES)
def test_config_txt_is_firmware_syntax(name: str) -> None:
    for line in (PROFILES_DIR / name / "config.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"(dtoverlay|dtparam)=[\w.,=-]+", line), line


def test_i2s_profile_uses_the_full_duplex_overlay() -> None:
    text = (PROFILES_DIR / "i2s-mems-max98357a" / "config.txt").read_text(encoding="utf-8")
    assert "dtoverlay=googlevoicehat-soundcard" in text
    assert "sndrpigooglevoi" in (PROFILES_DIR / "i2s-mems-max98357a" / "asound.conf").read_text()


@pytest.mark.parametrize("name", PROFILES)
def test_config_toml_is_valid_for_the_service(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = PROFILES_DIR / name / "config.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["capture_device"] == "atoms_capture"
    assert data["playback_device"] == "atoms_playback"
    assert data["aec"] == ("off" if name == "usb-speakerphone" else "webrtc")
    settings_module = pytest.importorskip("device.service.settings")
    for var in [v for v in os.environ if v.startswith("ATOMS_")]:
        monkeypatch.delenv(var)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    settings = settings_module.load_settings(path)   # unknown keys or bad values raise
    for key, value in data.items():
        assert getattr(settings, key) == value


def test_wiring_diagram_is_current_and_valid() -> None:
    svg = REPO / "docs" / "wiring.svg"
    result = subprocess.run([sys.executable, str(REPO / "deploy" / "make_wiring_diagram.py"), "--check"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("GPIO17", "GPIO27", "GPIO22", "GPIO23", "GPIO24", "GPIO18", "GPIO19", "GPIO20",
                  "GPIO21", "INMP441", "MAX98357A", "330 Ω"):
        assert label in text, label


def test_hardware_guide_covers_everything() -> None:
    guide = (REPO / "docs" / "hardware.md").read_text(encoding="utf-8")
    assert "wiring.svg" in guide
    for name in PROFILES:
        assert name in guide
    for topic in ("fuser -v /dev/snd", "power_save", "timesync", "half_duplex", "APA102",
                  "systemctl restart atoms-appliance", "journalctl -u atoms-appliance"):
        assert topic in guide, topic
