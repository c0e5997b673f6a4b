"""The layering rule, read from the source: `hw/` imports nothing from `device/` (nor `tests/`)."""
from __future__ import annotations

import ast
from pathlib import Path

HW = Path(__file__).resolve().parent.parent / "hw"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_hw_imports_nothing_above_it() -> None:
    files = sorted(HW.rglob("*.py"))
    assert files, "no hw modules found"
    offenders = {
        str(path.relative_to(HW.parent)): sorted(m for m in _imported_modules(path)
                                                 if m.split(".")[0] in ("device", "tests"))
        for path in files
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from device.core.events import Event\nimport device.cli\n")
    assert _imported_modules(bad) >= {"device.core.events", "device.cli"}
