"""Who may use the service's files and socket, and the one line that tells a person how to get in.

The installer makes /etc/atoms-appliance (config) and /run/atoms-appliance (control socket) root's
and the service group's only (0750); `ctl`, `config` and `doctor` run by anyone else get
EACCES. That is by design (the socket can start a call, the config names the agent), so the
answer is one line naming the group to join, not a traceback.
"""
from __future__ import annotations

import grp
import os
from pathlib import Path
from typing import Final

SERVICE_GROUP: Final = "atoms-appliance"   # deploy/install.sh: the service user's own group


def owning_group(path: Path) -> str:
    """The group of `path`, or of its nearest parent this user may stat, when it is not root's;
    else the service group."""
    for candidate in (path, *path.parents):
        try:
            gid = os.stat(candidate).st_gid
        except OSError:
            continue
        if gid == 0:
            continue
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return SERVICE_GROUP


def denied_message(path: str | os.PathLike[str] | None) -> str:
    """One line for a PermissionError on one of the service's paths."""
    where = Path(path) if path else Path("/run/atoms-appliance")
    group = owning_group(where)
    return (f"permission denied on {where}: only root and members of the group '{group}' may use the "
            f"service; fix: sudo usermod -a -G {group} $USER and log in again (or use sudo)")
