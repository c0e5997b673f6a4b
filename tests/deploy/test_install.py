"""deploy/install.sh into a staging tree (--root): files, owners, modes, idempotence, uninstall.

Runs the real script with bash. As root (CI), files must be root-owned; as another user the
owner checks are skipped (the script then cannot chown). The venv build is one slow test; the
others pass --no-venv.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
KEY = "sk_test_0123456789abcdef"
AS_ROOT = os.geteuid() == 0

CONFIG = "etc/atoms-appliance/config.toml"
CRED_DIR = "etc/atoms-appliance/credentials"
PLAIN = f"{CRED_DIR}/atoms_api_key"
ENCRYPTED = f"{CRED_DIR}/atoms_api_key.cred"
UNITS = ("etc/systemd/system/atoms-appliance.service", "etc/systemd/system/atoms-appliance-failed.service")
DROPIN = "etc/systemd/system/atoms-appliance.service.d/credential.conf"
MANIFEST = "opt/atoms-appliance/install-manifest"
BOOT_CONFIG = "boot/firmware/config.txt"
ORIGINAL_BOOT_CONFIG = "# Raspberry Pi OS\ndtparam=audio=on\n[cm4]\notg_mode=1\n[all]\n"
ORIGINAL_ASOUND = "pcm.!default { type hw card 0 }\n"


def run_install(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None,
                check: bool = True, script: str = str(INSTALL)) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", **(env or {})}
    result = subprocess.run(["bash", script, *args], capture_output=True, text=True,
                            input=stdin if stdin is not None else "", env=full_env, timeout=600,
                            check=False)
    if check:
        assert result.returncode == 0, f"install.sh {' '.join(args)} failed:\n{result.stderr}"
    return result


def snapshot(root: Path) -> dict[str, tuple[str, ...]]:
    """Every path under root with mode, owner and content hash (or link target)."""
    listing: dict[str, tuple[str, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                listing[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                listing[rel] = ("dir", oct(st.st_mode & 0o7777), str(st.st_uid), str(st.st_gid))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                listing[rel] = ("file", oct(st.st_mode & 0o7777), str(st.st_uid), str(st.st_gid),
                                digest, str(st.st_mtime_ns))
    return listing


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A staging tree that looks like a fresh Raspberry Pi OS image where it matters."""
    r = tmp_path / "root"
    (r / "boot/firmware").mkdir(parents=True)
    (r / BOOT_CONFIG).write_text(ORIGINAL_BOOT_CONFIG, encoding="utf-8")
    (r / "etc").mkdir()
    (r / "etc/asound.conf").write_text(ORIGINAL_ASOUND, encoding="utf-8")
    return r


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.txt"
    path.write_text(KEY + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def fake_systemd_creds(tmp_path: Path) -> tuple[Path, Path]:
    """A systemd-creds stand-in (the real one would create this host's credential secret).

    It records its arguments, so the test can prove the key never reaches a command line.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "creds-argv.log"
    script = bindir / "systemd-creds"
    script.write_text(f"""#!/bin/bash
set -euo pipefail
echo "$*" >>{log}
cmd=$1; shift
name=""; args=()
for a in "$@"; do case "$a" in --name=*) name=${{a#--name=}} ;; *) args+=("$a") ;; esac; done
in=${{args[0]}}; out=${{args[1]}}
read_in() {{ if [[ "$in" == - ]]; then cat; else cat "$in"; fi; }}
write_out() {{ if [[ "$out" == - ]]; then cat; else cat >"$out"; fi; }}
case "$cmd" in
  encrypt) {{ printf 'FAKE-CRED:%s:' "$name"; read_in | base64 -w0; }} | write_out ;;
  decrypt) read_in | sed "s/^FAKE-CRED:$name://" | base64 -d | write_out ;;
  *) exit 1 ;;
esac
""", encoding="utf-8")
    script.chmod(0o755)
    return bindir, log


def test_shell_syntax() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is missing (optional: apt-get install shellcheck)")
def test_shellcheck() -> None:
    result = subprocess.run(["shellcheck", "--severity=style", str(INSTALL)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_help() -> None:
    out = run_install("--help").stdout
    for option in ("--root", "--uninstall", "--hardware", "--api-key-file", "--no-start", "--no-venv"):
        assert option in out
    assert "respeaker-2mic" in out


def test_fresh_install(root: Path, key_file: Path) -> None:
    result = run_install("--root", str(root), "--no-start", "--no-venv", "--api-key-file",
                         str(key_file), "--agent-id", "agent-42")
    assert KEY not in result.stdout + result.stderr

    for unit in UNITS:
        assert (root / unit).read_bytes() == (REPO / "systemd" / Path(unit).name).read_bytes()
        assert mode(root / unit) == 0o644
    assert mode(root / CONFIG) == 0o640
    assert mode(root / "etc/atoms-appliance") == 0o750
    assert mode(root / CRED_DIR) == 0o700
    assert mode(root / PLAIN) == 0o600
    assert (root / PLAIN).read_text() == KEY            # no trailing newline in the credential
    assert not (root / ENCRYPTED).exists()              # a staging tree cannot use the host key
    assert "LoadCredential=atoms_api_key:/etc/atoms-appliance/credentials/atoms_api_key" in \
        (root / DROPIN).read_text()
    assert mode(root / DROPIN) == 0o644
    leds = root / "opt/atoms-appliance/libexec/atoms-appliance-error-leds"
    assert leds.read_bytes() == (REPO / "deploy/error_leds.py").read_bytes()
    assert mode(leds) == 0o755
    for profile in ("usb-speakerphone", "respeaker-2mic"):
        assert (root / f"opt/atoms-appliance/share/hardware/{profile}/asound.conf").is_file()

    config = (root / CONFIG).read_text()
    assert 'agent_id = "agent-42"' in config
    assert KEY not in config
    # The service user comes from systemd-sysusers at first boot; tmpfiles fixes the group.
    sysusers = (root / "etc/sysusers.d/atoms-appliance.conf").read_text()
    assert re.search(r"^u atoms-appliance ", sysusers, re.MULTILINE)
    assert re.search(r"^m atoms-appliance audio$", sysusers, re.MULTILINE)
    assert re.search(r"^m atoms-appliance gpio$", sysusers, re.MULTILINE)
    tmpfiles = (root / "etc/tmpfiles.d/atoms-appliance.conf").read_text()
    assert "z /etc/atoms-appliance/config.toml 0640 root atoms-appliance" in tmpfiles

    # No profile given: firmware config and ALSA config are untouched.
    assert (root / BOOT_CONFIG).read_text() == ORIGINAL_BOOT_CONFIG
    assert (root / "etc/asound.conf").read_text() == ORIGINAL_ASOUND

    if AS_ROOT:
        for rel, entry in snapshot(root).items():
            if rel.startswith(("etc/atoms-appliance", "etc/systemd", "opt/")):
                assert entry[2:4] == ("0", "0"), rel

    # Nothing else on disk holds the key.
    for path in root.rglob("*"):
        if path.is_file() and path != root / PLAIN:
            assert KEY.encode() not in path.read_bytes(), path


def test_second_run_changes_nothing(root: Path, key_file: Path) -> None:
    args = ("--root", str(root), "--no-start", "--no-venv", "--api-key-file", str(key_file),
            "--hardware", "respeaker-2mic")
    run_install(*args)
    before = snapshot(root)
    run_install(*args)
    assert snapshot(root) == before
    run_install("--root", str(root), "--no-start", "--no-venv")   # a plain upgrade run
    assert snapshot(root) == before


def test_uninstall_keeps_config_and_credential(root: Path, key_file: Path) -> None:
    run_install("--root", str(root), "--no-venv", "--api-key-file", str(key_file),
                "--hardware", "i2s-mems-max98357a")
    (root / CONFIG).write_text('agent_id = "mine"\n# edited by the user\n', encoding="utf-8")
    run_install("--root", str(root), "--uninstall")

    assert (root / CONFIG).read_text() == 'agent_id = "mine"\n# edited by the user\n'
    assert (root / PLAIN).read_text() == KEY
    for gone in (*UNITS, DROPIN, MANIFEST, "opt/atoms-appliance", "etc/sysusers.d/atoms-appliance.conf",
                 "etc/tmpfiles.d/atoms-appliance.conf"):
        assert not (root / gone).exists(), gone
    # The system's own files are back as they were.
    assert (root / BOOT_CONFIG).read_text() == ORIGINAL_BOOT_CONFIG
    assert (root / "etc/asound.conf").read_text() == ORIGINAL_ASOUND
    assert not list((root / "etc").glob("asound.conf.atoms-appliance*"))
    # A second uninstall has nothing left to do.
    run_install("--root", str(root), "--uninstall")


def test_uninstall_without_install(root: Path) -> None:
    result = run_install("--root", str(root), "--uninstall")
    assert "nothing to remove" in result.stderr


def test_hardware_profile_applied_exactly_once(root: Path) -> None:
    for _ in range(2):
        run_install("--root", str(root), "--no-venv", "--hardware", "respeaker-2mic")
    profile = REPO / "deploy/hardware/respeaker-2mic"
    assert (root / "etc/asound.conf").read_bytes() == (profile / "asound.conf").read_bytes()
    assert (root / "etc/asound.conf.atoms-appliance.orig").read_text() == ORIGINAL_ASOUND
    assert not (root / "etc/asound.conf.atoms-appliance.orig.1").exists()

    boot = (root / BOOT_CONFIG).read_text()
    assert boot.startswith(ORIGINAL_BOOT_CONFIG)
    assert boot.count("# >>> atoms-appliance hardware profile") == 1
    assert boot.count("# <<< atoms-appliance hardware profile") == 1
    assert boot.count("dtoverlay=respeaker-2mic-v2_0-overlay") == 1
    block = boot[len(ORIGINAL_BOOT_CONFIG):].splitlines()
    assert block[1] == "[all]"     # never scoped to the [cm4] section above it

    config = (root / CONFIG).read_text()
    assert 'capture_device = "atoms_capture"' in config
    assert "call_pin = 17" in config


def test_switching_profiles_replaces_the_block(root: Path) -> None:
    run_install("--root", str(root), "--no-venv", "--hardware", "i2s-mems-max98357a")
    run_install("--root", str(root), "--no-venv", "--hardware", "usb-mic-analog-speaker")
    boot = (root / BOOT_CONFIG).read_text()
    assert "googlevoicehat" not in boot
    assert boot.count("# >>> atoms-appliance hardware profile") == 1
    assert "usb-mic-analog-speaker" in boot
    assert (root / "etc/asound.conf").read_bytes() == \
        (REPO / "deploy/hardware/usb-mic-analog-speaker/asound.conf").read_bytes()
    # The profile's settings block of config.toml follows the new profile; the rest stays.
    config = (root / CONFIG).read_text()
    assert "i2s-mems-max98357a" not in config and config.count("# >>> atoms-appliance hardware profile settings") == 1
    assert "# >>> atoms-appliance hardware profile settings: usb-mic-analog-speaker" in config
    assert (REPO / "deploy/hardware/usb-mic-analog-speaker/config.toml").read_text() in config


def test_another_profile_keeps_the_users_lines_and_refuses_duplicates(root: Path) -> None:
    run_install("--root", str(root), "--no-venv", "--hardware", "respeaker-2mic", "--agent-id", "mine")
    config = root / CONFIG
    config.write_text(config.read_text() + '\n[variables]\ncustomer = "Ada"\n')
    result = run_install("--root", str(root), "--no-venv", "--hardware", "usb-speakerphone")
    text = config.read_text()
    assert 'agent_id = "mine"' in text and 'customer = "Ada"' in text and "respeaker" not in text
    assert text.index("hardware profile settings") < text.index("[variables]")   # top level, not a variable
    assert "updated the hardware profile settings" in result.stderr
    import tomllib
    tomllib.loads(text)
    # A key the user set outside the block: the update would set it twice, so the file is kept.
    config.write_text('capture_device = "mine"\n' + text)
    before = config.read_text()
    result = run_install("--root", str(root), "--no-venv", "--hardware", "respeaker-2mic")
    assert config.read_text() == before and "set a key twice" in result.stderr


def test_a_config_without_our_block_says_how(root: Path) -> None:
    (root / "etc/atoms-appliance").mkdir()
    (root / CONFIG).write_text('agent_id = "kept"\n', encoding="utf-8")
    result = run_install("--root", str(root), "--no-venv", "--hardware", "usb-speakerphone")
    assert (root / CONFIG).read_text() == 'agent_id = "kept"\n'
    assert "were NOT applied" in result.stderr and "share/hardware/usb-speakerphone/config.toml" in result.stderr


def test_a_profile_needing_config_txt_without_one_warns_loudly(tmp_path: Path) -> None:
    bare = tmp_path / "bare"   # no /boot/firmware at all
    result = run_install("--root", str(bare), "--no-venv", "--hardware", "respeaker-2mic")
    assert "WARNING" in result.stderr and "NOT applied" in result.stderr
    assert "dtoverlay=respeaker-2mic-v2_0-overlay" in result.stderr   # the lines to add, shown
    quiet = run_install("--root", str(tmp_path / "usb"), "--no-venv", "--hardware", "usb-speakerphone")
    assert "WARNING" not in quiet.stderr    # a USB profile needs no firmware lines


def test_root_names_the_staged_paths(root: Path) -> None:
    result = run_install("--root", str(root), "--no-venv", "--hardware", "respeaker-2mic")
    staged = result.stderr.split("staged into", 1)[1]
    for path in (CONFIG, "etc/asound.conf", BOOT_CONFIG, UNITS[0], MANIFEST.rsplit("/", 1)[0]):
        assert f"{root}/{path}" in staged, path


def test_existing_config_is_never_overwritten(root: Path, key_file: Path) -> None:
    (root / "etc/atoms-appliance").mkdir()
    (root / CONFIG).write_text('agent_id = "kept"\n', encoding="utf-8")
    (root / CONFIG).chmod(0o644)
    run_install("--root", str(root), "--no-venv", "--hardware", "usb-speakerphone",
                "--agent-id", "other", "--api-key-file", str(key_file))
    assert (root / CONFIG).read_text() == 'agent_id = "kept"\n'
    assert mode(root / CONFIG) == 0o640        # but its mode is repaired


def test_key_from_stdin(root: Path) -> None:
    run_install("--root", str(root), "--no-venv", "--api-key-file", "-", stdin=KEY + "\r\n")
    assert (root / PLAIN).read_text() == KEY


def test_no_key_means_no_dropin(root: Path) -> None:
    result = run_install("--root", str(root), "--no-venv")
    assert "no API key installed" in result.stderr
    assert not (root / DROPIN).exists()


def test_bad_arguments(root: Path, tmp_path: Path) -> None:
    assert run_install("--root", str(root), "--hardware", "nope", check=False).returncode != 0
    assert run_install("--bogus", check=False).returncode != 0
    missing = run_install("--root", str(root), "--no-venv", "--api-key-file",
                          str(tmp_path / "missing"), check=False)
    assert missing.returncode != 0 and "cannot read" in missing.stderr
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("two words\n", encoding="utf-8")
    assert run_install("--root", str(root), "--no-venv", "--api-key-file", str(spaced),
                       check=False).returncode != 0


def test_encrypted_credential(root: Path, key_file: Path, fake_systemd_creds: tuple[Path, Path]) -> None:
    bindir, argv_log = fake_systemd_creds
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    args = ("--root", str(root), "--no-venv", "--credential", "encrypted")
    run_install(*args, "--api-key-file", str(key_file), env=env)
    assert (root / ENCRYPTED).read_text().startswith("FAKE-CRED:atoms_api_key:")
    assert mode(root / ENCRYPTED) == 0o600
    assert not (root / PLAIN).exists()
    dropin = (root / DROPIN).read_text()
    assert "LoadCredentialEncrypted=atoms_api_key:/etc/atoms-appliance/credentials/atoms_api_key.cred" \
        in dropin
    assert "LoadCredential=" not in dropin

    # The same key again: the credential is decrypted, compared and left alone.
    before = snapshot(root)
    run_install(*args, "--api-key-file", str(key_file), env=env)
    assert snapshot(root) == before

    # Back to a plain credential: no encrypted copy is left behind.
    run_install("--root", str(root), "--no-venv", "--credential", "plain", "--api-key-file",
                str(key_file), env=env)
    assert (root / PLAIN).read_text() == KEY
    assert not (root / ENCRYPTED).exists()
    assert "LoadCredential=atoms_api_key:" in (root / DROPIN).read_text()

    assert KEY not in argv_log.read_text()      # the key only ever travelled through pipes


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing")
def test_installed_units_verify(root: Path, key_file: Path, tmp_path: Path) -> None:
    run_install("--root", str(root), "--no-venv", "--api-key-file", str(key_file))
    units = tmp_path / "units"
    shutil.copytree(root / "etc/systemd/system", units)
    for unit in units.glob("*.service"):
        unit.write_text(re.sub(r"/opt/atoms-appliance/venv/bin/\S+", "/usr/bin/true", unit.read_text()))
    result = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(units.glob("*.service")))],
                            capture_output=True, text=True, cwd=units, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert [line for line in (result.stdout + result.stderr).splitlines()
            if "atoms-appliance" in line] == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no /usr/bin/python3")
def test_venv_build_upgrade_and_removal(root: Path, tmp_path: Path) -> None:
    """The real venv path with the project, minus its dependencies (PyPI downloads are slow)."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import venv, ensurepip"], check=False,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-venv is missing (apt-get install python3-venv)")
    # A frozen copy of the source: "up to date" means "same source", and a working tree that
    # someone edits during the test is not the same source.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("deploy", "systemd", "docs", "device", "hw"):
        shutil.copytree(REPO / part, src / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        if (REPO / part).exists():
            shutil.copy2(REPO / part, src / part)
    installer = str(src / "deploy" / "install.sh")
    args = ("--root", str(root), "--no-start", "--lgpio", "no", "--pip-args", "--no-deps")
    run_install(*args, script=installer)
    venv = root / "opt/atoms-appliance/venv"
    program = venv / "bin/atoms-appliance"
    assert program.is_file()
    # The venv lives at /opt/atoms-appliance on the target, not in the staging tree.
    assert program.read_text().splitlines()[0] == "#!/opt/atoms-appliance/venv/bin/python"
    assert os.readlink(root / "usr/local/bin/atoms-appliance") == "/opt/atoms-appliance/venv/bin/atoms-appliance"
    assert "tree /opt/atoms-appliance/venv" in (root / MANIFEST).read_text()
    # The source tree stays clean: pip builds from a copy.
    assert not (src / "build").exists()
    assert not list(src.glob("*.egg-info"))

    before = snapshot(root)
    result = run_install(*args, script=installer)
    assert "venv is up to date" in result.stderr
    assert snapshot(root) == before

    run_install("--root", str(root), "--uninstall", script=installer)
    assert not venv.exists()
    assert not (root / "usr/local/bin/atoms-appliance").exists()


UDEV_RULE = "etc/udev/rules.d/60-atoms-appliance-gpio.rules"


def test_gpio_udev_rule_where_the_os_has_none(root: Path) -> None:
    """Plain Debian leaves /dev/gpiochip* root's: the installer gives them to the gpio group."""
    run_install("--root", str(root), "--no-venv")
    rule = (root / UDEV_RULE).read_text()
    assert 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' in rule
    assert mode(root / UDEV_RULE) == 0o644
    assert f"file /{UDEV_RULE}" in (root / MANIFEST).read_text()
    run_install("--root", str(root), "--uninstall")
    assert not (root / UDEV_RULE).exists()


def test_no_gpio_udev_rule_where_the_os_has_one(root: Path) -> None:
    """Raspberry Pi OS ships its own rule (99-com.rules): ours would only be a second opinion."""
    os_rules = root / "usr/lib/udev/rules.d"
    os_rules.mkdir(parents=True)
    (os_rules / "99-com.rules").write_text('SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"\n')
    run_install("--root", str(root), "--no-venv")
    assert not (root / UDEV_RULE).exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no /usr/bin/python3")
def test_lgpio_without_swig_or_a_wheel_fails_early_with_the_fix(root: Path, tmp_path: Path) -> None:
    """With --root there is no apt to fetch swig: when no lgpio wheel is at hand either (Python
    3.13, or aarch64), the installer says so before building anything."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import venv, ensurepip"], check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-venv is missing (apt-get install python3-venv)")
    bin_dir = tmp_path / "bin"   # a PATH without swig
    bin_dir.mkdir()
    for tool in ("bash", "cat", "chmod", "chown", "cmp", "cut", "dirname", "find", "grep", "id", "ln", "mkdir",
                 "mktemp", "mv", "readlink", "rm", "rmdir", "sed", "sha256sum", "sort", "tar", "tr", "xargs", "awk",
                 "basename", "env", "stat"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    result = run_install("--root", str(root), "--no-start", "--lgpio", "yes", "--pip-args", "--no-index",
                         env={"PATH": str(bin_dir)}, check=False)
    assert result.returncode != 0
    assert "lgpio has no wheel for Python" in result.stderr
    assert "apt-get install swig" in result.stderr and "--find-links DIR" in result.stderr
    assert not (root / "opt/atoms-appliance/venv/bin/atoms-appliance").exists()
