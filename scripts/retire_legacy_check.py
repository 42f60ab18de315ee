"""`make retire-legacy-check`: prove that retiring the cron path is one folder and one line.

Copies the working tree to a temporary directory, deletes `legacy_cron/` (with
`tests/legacy_cron/`) and the one line of `create_app` that wires it (with its import), checks
that nothing else names `legacy_cron`, then runs the QStash-path, migration, parity and
reliability tests there with this project's venv. Exit status: the tests'. CI runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTORY = Path("flask_app/__init__.py")
#: The wiring create_app has for the cron path: its import and its one call.
WIRING = (
    re.compile(r"^import legacy_cron\n", re.M),
    re.compile(r"^ +legacy_cron\.init_app\(app\).*\n", re.M),
)
DELETED = ("legacy_cron", "tests/legacy_cron")
IMPORT = re.compile(r"^\s*(import|from) legacy_cron\b", re.M)
#: What must still pass without the cron path (the `reliability`-marked giants excepted, as in
#: `make test`).
SUITES = (
    "tests/e2e",
    "tests/test_outbox.py",
    "tests/test_delivery.py",
    "tests/test_callbacks.py",
    "tests/test_integration.py",
    "tests/test_paths.py",
    "tests/migration",
    "tests/test_schema.py",
    "tests/test_parity.py",
    "tests/test_comparison.py",
    "tests/reliability",
    "tests/test_imports.py",
    "tests/shim/test_imports.py",
)


def copy_tree(dest: Path) -> None:
    """Copy what git would see (tracked and untracked, not ignored) into `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def retire(tree: Path) -> None:
    """Delete the folder and the wiring; fail if anything else still imports legacy_cron."""
    for folder in DELETED:
        shutil.rmtree(tree / folder)
    factory = tree / FACTORY
    text = factory.read_text()
    for pattern in WIRING:
        text, found = pattern.subn("", text)
        if found != 1:
            sys.exit(
                f"retire: expected one match of {pattern.pattern!r} in {FACTORY}, found {found}"
            )
    factory.write_text(text)
    left = [
        str(path.relative_to(tree))
        for path in tree.rglob("*.py")
        if IMPORT.search(path.read_text())
    ]
    if left:
        sys.exit(
            "retire: still importing legacy_cron after its removal: " + ", ".join(sorted(left))
        )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="retire-legacy-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        retire(tree)
        print(f"retire-legacy-check: {tree} has no legacy_cron/; running the QStash-only suites")
        env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-m", "not reliability", *SUITES, *sys.argv[1:]]
        return subprocess.run(command, cwd=tree, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
