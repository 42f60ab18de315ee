"""The hashed lock files agree with the human-edited pins (docs/dependencies.md: `make lock`)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\;]+)", re.M)


def pins(name):
    return {k.lower().replace("_", "-"): v for k, v in PIN.findall((ROOT / name).read_text())}


@pytest.mark.parametrize(
    ("source", "lock"),
    [
        ("requirements.txt", "requirements.lock"),
        ("requirements.txt", "requirements-dev.lock"),
        ("requirements-dev.txt", "requirements-dev.lock"),
    ],
)
def test_every_pin_is_locked_at_the_same_version(source, lock):
    locked = pins(lock)
    stale = {name: (version, locked.get(name)) for name, version in pins(source).items()
             if locked.get(name) != version}  # fmt: skip
    assert not stale, f"{lock} is stale (run `make lock`): {stale}"


def test_the_runtime_lock_is_part_of_the_dev_lock():
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {k: dev.get(k) for k in runtime} == runtime


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_has_a_hash(lock):
    text = (ROOT / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text)
    unhashed = [b.split("==")[0] for b in blocks if "==" in b and "--hash=sha256:" not in b]
    assert not unhashed


def test_pyjwt_is_pinned_because_the_code_imports_it():
    assert "pyjwt" in pins("requirements.txt")
