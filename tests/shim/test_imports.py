"""The import graph: no cycle anywhere in flask_app, and the shim imports nothing above it.

grimp (import-linter's graph builder) reads every import statement, including those inside
functions, which are how cycles usually hide; imports under `if TYPE_CHECKING:` are left out,
as Python never runs them. graphlib (stdlib) finds a cycle and names it.
"""

from __future__ import annotations

import graphlib

import grimp
import pytest

PACKAGE = "flask_app"
SHIM = "flask_app.shim"


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    """Each flask_app module -> the flask_app modules it imports (anywhere in its code)."""
    graph = grimp.build_graph(PACKAGE, exclude_type_checking_imports=True, cache_dir=None)
    return {
        module: {m for m in graph.find_modules_directly_imported_by(module) if _inside(m, PACKAGE)}
        for module in graph.modules
    }


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def find_cycle(imports: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, each module importing the next, or None."""
    try:
        tuple(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists each module before its importer
    return None


def test_flask_app_has_no_import_cycle(imports):
    cycle = find_cycle(imports)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_finds_a_cycle_when_there_is_one(imports):
    looped = {module: set(targets) for module, targets in imports.items()}
    looped["flask_app.shim.states"].add("flask_app.shim.task")  # task imports states already
    assert find_cycle(looped) is not None


def test_the_shim_imports_nothing_of_the_app_that_hosts_it(imports):
    outside = {
        module: sorted(t for t in targets if not _inside(t, SHIM))
        for module, targets in imports.items()
        if _inside(module, SHIM)
    }
    assert {m: t for m, t in outside.items() if t} == {}


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path, monkeypatch):
    package = tmp_path / "loopy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loopy import b\n")
    (package / "b.py").write_text("def late():\n    from loopy import a\n    return a\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loopy import a\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("loopy", exclude_type_checking_imports=True, cache_dir=None)
    found = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert set(find_cycle(found) or []) == {"loopy.a", "loopy.b"}
    assert found["loopy.c"] == set()  # type-only imports are not cycles
