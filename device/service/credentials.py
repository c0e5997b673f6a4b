"""The API key where the systemd unit gets it, for commands run outside the unit (`doctor`).

deploy/install.sh stores the key as the credential `atoms_api_key` in /etc/atoms-appliance/
credentials/: `atoms_api_key.cred` encrypted by systemd-creds (the default), or `atoms_api_key`
plain (0600). systemd hands the running service a copy in $CREDENTIALS_DIRECTORY; a person's shell
has none, so `doctor` reads the same file itself: as root it can, anyone else is told how.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CREDENTIAL_NAME: Final = "atoms_api_key"
CREDENTIAL_DIR: Final = Path("/etc/atoms-appliance/credentials")
SUDO_HINT: Final = "run `sudo atoms-appliance doctor`: the key is the service's systemd credential, readable by root only"


@dataclass(frozen=True)
class UnitKey:
    """What was found: the key, or why not (`problem`, a sentence for a person); both None when
    no credential is installed at all."""

    key: str | None = None
    problem: str | None = None


def unit_key(directory: Path = CREDENTIAL_DIR, decrypt_timeout: float = 20.0) -> UnitKey:
    """The unit's key, read as the unit would get it (plain file or `systemd-creds decrypt`)."""
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return UnitKey()   # inside the unit: settings read it from there already
    plain, encrypted = directory / CREDENTIAL_NAME, directory / f"{CREDENTIAL_NAME}.cred"
    try:
        if encrypted.is_file():
            result = subprocess.run(["systemd-creds", "decrypt", f"--name={CREDENTIAL_NAME}", str(encrypted), "-"],
                                    capture_output=True, text=True, timeout=decrypt_timeout, check=False)
            if result.returncode != 0:
                denied = os.geteuid() != 0 or "ermission" in result.stderr
                return UnitKey(problem=SUDO_HINT if denied else
                               f"systemd-creds cannot decrypt {encrypted}: {result.stderr.strip()[:200]}")
            return UnitKey(key=result.stdout.strip())
        if plain.is_file():
            return UnitKey(key=plain.read_text().strip())
    except PermissionError:
        return UnitKey(problem=SUDO_HINT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UnitKey(problem=f"cannot read the service's key in {directory}: {exc}")
    if not os.access(directory.parent, os.X_OK) or (directory.exists() and not os.access(directory, os.X_OK)):
        return UnitKey(problem=SUDO_HINT)
    return UnitKey()
