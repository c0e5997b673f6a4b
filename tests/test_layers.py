"""The layering rules, read from the source: `hw` <- `device` <- `tools` <- `tests`.

`hw/` imports nothing from `device/`, `tools/` or `tests/`; `device/` nothing from `tools/` or
`tests/`; `tools/` (programs and the instruments the tests share) nothing from `tests/`.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HW = REPO / "hw"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _offenders(package: str, above: tuple[str, ...]) -> dict[str, list[str]]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no {package} modules found"
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in _imported_modules(path) if m.split(".")[0] in above)
        for path in files
    }
    return {k: v for k, v in offenders.items() if v}


def test_hw_imports_nothing_above_it() -> None:
    assert not _offenders("hw", ("device", "tools", "tests"))


def test_device_imports_neither_tools_nor_tests() -> None:
    assert not _offenders("device", ("tools", "tests"))


def test_tools_import_nothing_from_tests() -> None:
    assert not _offenders("tools", ("tests",))


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from device.core.events import Event\nimport device.cli\n")
    assert _imported_modules(bad) >= {"device.core.events", "device.cli"}
