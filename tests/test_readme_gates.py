"""The README quotes the parity report's gates from the code (scripts/readme_gates.py), and
.env.example names every setting."""

import importlib.util
import re
from pathlib import Path

from flask_app.config import Settings
from flask_app.core.dispatch import DispatchConfig
from flask_app.observe import gates_doc

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_gates_are_the_reports_own():
    spec = importlib.util.spec_from_file_location("readme_gates", ROOT / "scripts/readme_gates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    expected = gates_doc.replace_block(readme, module.current_table())
    assert readme == expected, "README gates differ: run .venv/bin/python scripts/readme_gates.py"


def env_example_names() -> set[str]:
    """Every variable .env.example names, set or commented out."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))


def test_env_example_documents_every_setting():
    named = env_example_names()
    wanted = set(Settings.model_fields) | set(DispatchConfig.model_fields)
    assert not wanted - named, f".env.example lacks {sorted(wanted - named)}"
