"""Tests of `atoms-appliance doctor`, `devices` and `ctl status`, with shared helpers.

Helpers live here rather than in a conftest so each test module imports exactly what it uses.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

TEST_KEY = "doctor-test-key-5f3a9c"   # distinctive, so "never printed" can be checked by search


def isolate_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ATOMS_* from the developer's shell and an empty private config file instead of /etc's."""
    for name in list(os.environ):
        if name.startswith("ATOMS_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    config = tmp_path / "config.toml"
    config.write_text("")
    config.chmod(0o600)
    monkeypatch.setenv("ATOMS_CONFIG", str(config))
    return config


def closed_port() -> int:
    """A local TCP port nobody listens on: bound (so it was free), then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
