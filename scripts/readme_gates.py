"""Rewrite the README's rollout-gates block from the parity report's own thresholds.

Run: .venv/bin/python scripts/readme_gates.py   (tests/test_readme_gates.py checks it is current)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_app import create_app  # noqa: E402
from flask_app.dbschema import upgrade  # noqa: E402
from flask_app.observe import comparison, gates_doc  # noqa: E402


def current_table() -> str:
    """The gates of a report over an empty database (the thresholds, not any values)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'gates.db'}"
        upgrade(url)
        app = create_app({"TESTING": True, "DATABASE_URL": url})
        with app.app_context():
            table = gates_doc.gates_markdown(comparison.current_report("24h").gates)
        app.extensions["db"].engine.dispose()
    return table


def main() -> int:
    readme = ROOT / "README.md"
    readme.write_text(gates_doc.replace_block(readme.read_text(), current_table()))
    print("README.md: rollout gates rewritten from the parity report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
