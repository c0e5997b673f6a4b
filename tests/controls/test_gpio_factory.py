"""Choosing the real pin factory: the board setting, the chip, gpiozero's own switch, lgpio's
work directory. The lgpio factory itself needs a /dev/gpiochip (the system test's gpio-sim)."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from hw import gpio_factory
from hw.errors import DeviceUnavailable
from hw.gpio_factory import import_lgpio, real_pin_factory


def test_a_pi_it_recognises_keeps_gpiozeros_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpio_factory, "is_raspberry_pi", lambda: True)
    assert real_pin_factory(None, "auto") is None
    assert real_pin_factory(None, "pi") is None


def test_gpiozeros_own_switch_wins_when_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.setattr(gpio_factory, "is_raspberry_pi", lambda: False)
    assert real_pin_factory(None, "auto") is None


def test_board_pi_refuses_other_boards_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(gpio_factory, "is_raspberry_pi", lambda: False)
    with pytest.raises(DeviceUnavailable, match='gpio_board = "generic"'):
        real_pin_factory(None, "pi")


def test_without_lgpio_other_boards_get_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(gpio_factory, "is_raspberry_pi", lambda: False)

    def missing() -> types.ModuleType:
        raise ImportError("No module named 'lgpio'")

    monkeypatch.setattr(gpio_factory, "import_lgpio", missing)
    with pytest.raises(DeviceUnavailable, match="lgpio is not installed"):
        real_pin_factory(3, "generic")


def test_unknown_board_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        real_pin_factory(None, "banana")  # type: ignore[arg-type]


def test_lgpio_gets_a_private_work_directory_and_the_cwd_back(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """lgpio's library chdir()s into $LG_WD when loaded and makes its FIFOs there; outside the unit
    LG_WD is unset: import_lgpio gives it a directory of this process's own and restores the cwd."""
    seen: dict[str, str] = {}

    class FakeLgpio(types.ModuleType):
        error = RuntimeError

    def fake_import(name: str, *args: object, **kwargs: object) -> types.ModuleType:
        if name == "lgpio":
            seen["LG_WD"] = os.environ["LG_WD"]
            os.chdir(os.environ["LG_WD"])   # what the C library does on load
            return FakeLgpio("lgpio")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    real_import = __import__
    monkeypatch.delenv("LG_WD", raising=False)
    monkeypatch.delitem(sys.modules, "lgpio", raising=False)
    monkeypatch.setattr("builtins.__import__", fake_import)
    monkeypatch.chdir(tmp_path)
    module = import_lgpio()
    assert module.__name__ == "lgpio"
    workdir = Path(seen["LG_WD"])
    assert workdir.is_dir() and workdir.stat().st_uid == os.getuid()
    assert (workdir.stat().st_mode & 0o777) == 0o700
    assert Path.cwd() == tmp_path


def test_a_set_lg_wd_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LG_WD", str(tmp_path))
    monkeypatch.setitem(sys.modules, "lgpio", types.ModuleType("lgpio"))
    import_lgpio()
    assert os.environ["LG_WD"] == str(tmp_path)
