"""`ctl` (and `config`, `doctor`) by someone outside the service's group: one line naming the group."""
from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from device import cli
from device.service import control
from device.service.access import SERVICE_GROUP, denied_message, owning_group


def test_the_message_names_the_group_that_owns_the_path(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    path.parent.mkdir()
    group = next((g for g in grp.getgrall() if g.gr_gid != 0), None)
    if group is None:
        pytest.skip("no group other than root here")
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    os.chown(path.parent, -1, group.gr_gid)
    assert owning_group(path) == group.gr_name
    message = denied_message(path)
    assert "\n" not in message
    assert f"group '{group.gr_name}'" in message and f"usermod -a -G {group.gr_name}" in message


def test_root_owned_paths_name_the_service_group(tmp_path: Path) -> None:
    assert owning_group(Path("/")) == SERVICE_GROUP


def test_ctl_permission_denied_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    def denied(path: Path, cmd: str, timeout: float | None = None) -> dict[str, object]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(control, "send_command", denied)
    status = cli.main(["ctl", "status", "--socket", str(tmp_path / "control.sock")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"permission denied on {tmp_path / 'control.sock'}" in err and "group" in err


def test_an_unreadable_config_is_one_line_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", "/etc/atoms-appliance/config.toml")

    monkeypatch.setattr(cli, "load_settings", unreadable)
    assert cli.main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/etc/atoms-appliance/config.toml" in err
