"""The module map stays a map (STYLE.md §1): the booking path never reaches the shim, and only
create_app knows the legacy cron path exists. (No import cycle: tests/shim/test_imports.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
#: The booking path: the execution core, the QStash path and the AimHarder client.
BOOKING_PATH = ("flask_app.core", "flask_app.qstash", "flask_app.aimharder")


def test_the_booking_path_imports_nothing_from_the_shim_even_indirectly():
    graph = grimp.build_graph("flask_app", exclude_type_checking_imports=True, cache_dir=None)
    reaching = [
        part
        for part in BOOKING_PATH
        if graph.chain_exists(importer=part, imported="flask_app.shim", as_packages=True)
    ]
    assert reaching == []


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_only_create_app_imports_legacy_cron():
    importers = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".venv", "legacy_cron"} or rel.parts[:2] == ("tests", "legacy_cron"):
            continue
        if any(name.split(".")[0] == "legacy_cron" for name in _imports(path)):
            importers.append(str(rel))
    assert importers in ([], ["flask_app/__init__.py"])
