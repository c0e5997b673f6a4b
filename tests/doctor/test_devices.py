"""Sound devices: open checks on real alsa-lib with test PCMs (tests/alsa's fixture), a busy device
and its holder found in a fake /proc tree, the fakes, and the `devices` table."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import alsaaudio
import pytest

from device.cli import main as cli_main
from device.doctor.core import Status
from device.doctor.devices import check_audio_device, find_pcm_holders, format_devices, pcm_suitability
from hw.alsa import AlsaAudioBackend, list_devices
from hw.alsa_devices import CardInfo, DeviceListing, PcmInfo
from hw.fake_audio import FakeAudioBackend
from tests.alsa.conftest import AlsaTestConfig, alsa_config  # noqa: F401 - the fixture, reused

from . import isolate_settings

pytestmark = pytest.mark.timeout(30)


def fake_proc(root: Path, processes: dict[int, tuple[str, list[str]]]) -> Path:
    """A /proc look-alike: <pid>/comm and <pid>/fd/<n> symlinks to the given targets."""
    root.mkdir(parents=True)
    for pid, (command, targets) in processes.items():
        fd = root / str(pid) / "fd"
        fd.mkdir(parents=True)
        (root / str(pid) / "comm").write_text(command + "\n")
        for n, target in enumerate(targets, start=3):
            os.symlink(target, fd / str(n))
    (root / "self").mkdir()          # not a pid: ignored
    return root


def busy_pcm(**kwargs: Any) -> Any:
    raise alsaaudio.ALSAAudioError(f"Device or resource busy [{kwargs['device']}]")


# -- opening --------------------------------------------------------------------------------------
def test_the_test_pcms_open_at_the_needed_rates(alsa_config: AlsaTestConfig) -> None:  # noqa: F811
    backend = AlsaAudioBackend(alsa_config.capture_pcm, alsa_config.playback_pcm)
    mic = check_audio_device("capture", backend, 16000)
    speaker = check_audio_device("playback", backend, 24000)
    assert mic.status is Status.PASS and speaker.status is Status.PASS, (mic, speaker)
    assert "16000 Hz" in mic.detail and "24000 Hz" in speaker.detail
    assert mic.name == "microphone" and speaker.name == "speaker"


def test_a_missing_pcm_fails_and_points_at_devices(alsa_config: AlsaTestConfig) -> None:  # noqa: F811
    backend = AlsaAudioBackend("atoms_no_such_mic", alsa_config.playback_pcm)
    result = check_audio_device("capture", backend, 16000)
    assert result.status is Status.FAIL
    assert "'atoms_no_such_mic' not found" in result.detail
    assert "atoms-appliance devices" in result.fix and "ATOMS_CAPTURE_DEVICE" in result.fix


def test_a_busy_mic_names_the_process_holding_it(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {
        4321: ("arecord", ["/dev/snd/pcmC1D0c", "/dev/null"]),
        4322: ("aplay", ["/dev/snd/pcmC1D0p"]),              # a speaker: not the mic's holder
        os.getpid(): ("python3", ["/dev/snd/pcmC1D0c"]),     # ourselves: never blamed
    })
    backend = AlsaAudioBackend("hw:1,0", "hw:1,0", pcm_factory=busy_pcm)
    result = check_audio_device("capture", backend, 16000, proc_root=proc)
    assert result.status is Status.FAIL
    assert "'hw:1,0' is busy: held by pid 4321 (arecord) on /dev/snd/pcmC1D0c" == result.detail
    assert "stop arecord (pid 4321)" in result.fix
    speaker = check_audio_device("playback", backend, 16000, proc_root=proc)
    assert "pid 4322 (aplay)" in speaker.detail and "4321" not in speaker.detail


def test_a_busy_device_held_by_the_service_says_stop_the_service(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {77: ("atoms-appliance", ["/dev/snd/pcmC0D0p"])})
    result = check_audio_device("playback", AlsaAudioBackend(pcm_factory=busy_pcm), 16000, proc_root=proc)
    assert result.status is Status.FAIL
    assert "systemctl stop atoms-appliance" in result.fix


def test_a_busy_device_with_no_visible_holder_still_fails(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {})
    result = check_audio_device("capture", AlsaAudioBackend(pcm_factory=busy_pcm), 16000, proc_root=proc)
    assert result.status is Status.FAIL
    assert "busy" in result.detail and "fuser" in result.fix


def test_holders_of_a_missing_proc_tree_are_unknown(tmp_path: Path) -> None:
    assert find_pcm_holders("capture", tmp_path / "nothing") == ([], True)


def test_fake_devices_open_and_an_unplugged_one_fails() -> None:
    backend = FakeAudioBackend()
    assert check_audio_device("capture", backend, 16000).status is Status.PASS
    backend.playback_plug.unplug()
    result = check_audio_device("playback", backend, 16000)
    assert result.status is Status.FAIL and "unplugged" in result.detail


# -- the `devices` table --------------------------------------------------------------------------
def test_the_table_marks_what_suits_the_mic_and_the_speaker() -> None:
    listing = DeviceListing(
        cards=[CardInfo(1, "Device", "USB PnP Sound Device", "USB PnP Sound Device at usb-1")],
        capture=[PcmInfo("default"), PcmInfo("plughw:CARD=Device,DEV=0", "USB PnP Sound Device"),
                 PcmInfo("hw:CARD=Device,DEV=0"), PcmInfo("dsnoop:CARD=Device,DEV=0"), PcmInfo("null")],
        playback=[PcmInfo("default"), PcmInfo("plughw:CARD=Device,DEV=0", "USB PnP Sound Device"),
                  PcmInfo("dmix:CARD=Device,DEV=0"), PcmInfo("surround51:CARD=Device,DEV=0"),
                  PcmInfo("speexrate")],
    )
    text = format_devices(listing, "plughw:CARD=Device,DEV=0", "default")
    rows = {line.split()[2]: line.split()[:2] for line in text.splitlines()
            if line.startswith("  ") and len(line.split()) > 2 and line.split()[0] in ("ok", "maybe", "no", "-")}
    assert rows["default"] == ["ok", "ok"]
    assert rows["plughw:CARD=Device,DEV=0"] == ["ok", "ok"]
    assert rows["hw:CARD=Device,DEV=0"] == ["maybe", "-"]
    assert rows["dsnoop:CARD=Device,DEV=0"] == ["ok", "-"]
    assert rows["dmix:CARD=Device,DEV=0"] == ["-", "ok"]
    assert rows["surround51:CARD=Device,DEV=0"] == ["-", "no"]
    assert rows["speexrate"] == ["-", "no"] and rows["null"] == ["no", "-"]
    line = next(line for line in text.splitlines() if "plughw:CARD=Device,DEV=0" in line)
    assert line.endswith("converts rate and format; one program at a time  <- capture_device")
    assert "<- playback_device" in text and "(USB PnP Sound Device)" in text


def test_a_configured_pcm_missing_from_the_list_is_noted() -> None:
    text = format_devices(DeviceListing(), "my_mic", None)
    assert "(no sound cards found" in text
    assert "capture_device 'my_mic' is not in this list" in text
    assert pcm_suitability("my_mic")[0] == "maybe"


def test_devices_command_lists_the_test_pcms(alsa_config: AlsaTestConfig, tmp_path: Path,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("ATOMS_CAPTURE_DEVICE", alsa_config.capture_pcm)
    assert cli_main(["devices"]) == 0
    out = capsys.readouterr().out
    assert alsa_config.capture_pcm in out and alsa_config.capture_description in out
    assert "<- capture_device" in out
    names = {p.name for p in list_devices().capture}
    assert alsa_config.capture_pcm in names
