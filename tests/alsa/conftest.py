"""Real alsa-lib without a sound card: test-local PCMs made of alsa-lib's `file` and `null` plugins.

How the configuration reaches alsa-lib, and why this way (each point checked with alsa-lib 1.2.8):
- alsa-lib keeps one global configuration per process. Every `snd_pcm_open` (and the name-hint
  walk behind `alsaaudio.pcms()`) calls `snd_config_update()`, which reloads it only when the
  list of top-level files named by `ALSA_CONFIG_PATH` changes, or one of them changes (by device,
  inode and mtime in whole seconds).
- So setting `ALSA_CONFIG_PATH` in `os.environ` works in-process even after alsa-lib has loaded
  the system configuration (the file list changed), and restoring it afterwards makes the next
  open reload the system configuration. That is what the package-scoped fixture below does.
- Overriding `HOME` in-process does NOT work once alsa-lib has loaded: `~/.asoundrc` is pulled in
  by a hook inside the system `alsa.conf` and is not tracked, so `pcms()` lists the new PCMs but
  opening them still fails with "Unknown PCM". `HOME=tmp` only works for a fresh subprocess, and
  a subprocess would cost start-up time and hide tracebacks; in-process is simpler and faster.
- Our file is the ONLY configuration file (the system `alsa.conf` is left out): the tests then
  cannot be changed by the developer's `~/.asoundrc`, `/etc/asound.conf` or a PulseAudio or
  PipeWire default, and our PCMs need nothing from it (`file` and `null` are built into
  libasound2 itself). The config is written once, at fixed paths, because a rewrite within the
  same second could go unnoticed; tests change the raw data files instead.

The `file` plugin over `null` is not paced in real time: reads and writes return at once.
Capture reads its `infile` (raw PCM, read at each open: write it before opening); playback
writes raw PCM to its output file (truncated at each open).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import alsaaudio
import pytest

CAPTURE_PCM = "atoms_test_capture"
PLAYBACK_PCM = "atoms_test_playback"
CAPTURE_DESCRIPTION = "atoms-appliance test microphone (file plugin)"
PLAYBACK_DESCRIPTION = "atoms-appliance test speaker (file plugin)"

_CONFIG = """\
pcm.{capture} {{
    type file
    slave.pcm {{ type null }}
    file "/dev/null"
    infile "{infile}"
    format "raw"
    hint {{ show on description "{capture_description}" }}
}}
pcm.{playback} {{
    type file
    slave.pcm {{ type null }}
    file "{outfile}"
    format "raw"
    hint {{ show on description "{playback_description}" }}
}}
"""


@dataclass(frozen=True)
class AlsaTestConfig:
    """The test-local PCMs and the raw files behind them."""

    config: Path
    capture_pcm: str
    playback_pcm: str
    capture_file: Path
    playback_file: Path
    capture_description: str = CAPTURE_DESCRIPTION
    playback_description: str = PLAYBACK_DESCRIPTION

    def set_capture(self, pcm: bytes) -> None:
        """What the capture PCM will deliver from its next open on."""
        self.capture_file.write_bytes(pcm)

    def played(self) -> bytes:
        """Everything the playback PCM wrote since its last open."""
        return self.playback_file.read_bytes() if self.playback_file.exists() else b""


@pytest.fixture(scope="package")
def alsa_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlsaTestConfig]:
    directory = tmp_path_factory.mktemp("alsa")
    setup = AlsaTestConfig(
        config=directory / "asoundrc",
        capture_pcm=CAPTURE_PCM,
        playback_pcm=PLAYBACK_PCM,
        capture_file=directory / "capture.raw",
        playback_file=directory / "playback.raw",
    )
    setup.config.write_text(_CONFIG.format(
        capture=CAPTURE_PCM, playback=PLAYBACK_PCM, infile=setup.capture_file,
        outfile=setup.playback_file, capture_description=CAPTURE_DESCRIPTION,
        playback_description=PLAYBACK_DESCRIPTION,
    ))
    setup.set_capture(b"")
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = str(setup.config)
    try:
        _check_plugins(setup)
        yield setup
    finally:
        if saved is None:
            os.environ.pop("ALSA_CONFIG_PATH", None)
        else:
            os.environ["ALSA_CONFIG_PATH"] = saved


def _check_plugins(setup: AlsaTestConfig) -> None:
    """Fail loudly (never skip) when alsa-lib cannot open the test PCMs."""
    for pcm_type, name in ((alsaaudio.PCM_CAPTURE, setup.capture_pcm), (alsaaudio.PCM_PLAYBACK, setup.playback_pcm)):
        try:
            alsaaudio.PCM(type=pcm_type, device=name, rate=16000, channels=1,
                          format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=160, periods=4).close()
        except alsaaudio.ALSAAudioError as exc:
            pytest.fail(
                f"alsa-lib cannot open the test PCM {name!r} ({exc}) from {setup.config}. Its `file` and "
                "`null` plugins are built into libasound2 (Debian package libasound2, libasound2t64 "
                "from trixie on); check that package and that ALSA_CONFIG_PATH reaches alsa-lib."
            )


@pytest.fixture
def alsa(alsa_config: AlsaTestConfig) -> AlsaTestConfig:
    """The test PCMs with an empty capture file and no playback output yet."""
    alsa_config.set_capture(b"")
    alsa_config.playback_file.unlink(missing_ok=True)
    return alsa_config
