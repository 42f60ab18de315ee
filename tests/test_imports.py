"""The module map stays a map: no import cycle inside flask_app, the booking path never touches
the shim, and only create_app knows the legacy cron path exists (STYLE.md §1)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_app"
#: The booking path: the execution core, the QStash path and the AimHarder client.
BOOKING_PATH = ("flask_app.core", "flask_app.qstash", "flask_app.aimharder")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `path` imports at run time (in functions too; not for typing).

    A package's own __init__ is not counted for its submodules (Python runs it first, and
    flask_app/__init__.py is the factory that imports every part by design).
    """
    found: set[str] = set()
    skipped: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # a submodule, else a name defined in the module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found)) - {name} for name, path in found.items()}


def test_there_is_no_import_cycle_inside_flask_app():
    try:
        TopologicalSorter(graph()).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_booking_path_imports_nothing_from_the_shim():
    edges = graph()
    reached: set[str] = set()
    todo = [name for name in edges if name.startswith(BOOKING_PATH)]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(edges[name])
    assert sorted(n for n in reached if n.startswith("flask_app.shim")) == []


def test_only_create_app_imports_legacy_cron():
    importers = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".venv", "legacy_cron"} or rel.parts[:2] == ("tests", "legacy_cron"):
            continue
        if any(name.split(".")[0] == "legacy_cron" for name in _imports(path)):
            importers.append(str(rel))
    assert importers in ([], ["flask_app/__init__.py"])


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names
