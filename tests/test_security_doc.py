"""docs/security.md names the tests behind each promise: they must exist, and
every attack test must be named there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "security.md"
ATTACK_MODULES = ("test_attacks.py", "test_supply.py")


def defined_tests(module: str) -> set[str]:
    text = (ROOT / "tests" / module).read_text()
    return set(re.findall(r"^(?:async )?def (test_\w+)", text, re.M))


def test_every_test_the_security_doc_names_exists_and_every_attack_is_named():
    doc = DOC.read_text()
    named = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`", doc)
    assert len(named) >= 15, "the table lost its tests"
    missing = [
        f"{module}::{name}" if name else module
        for module, name in named
        if not (ROOT / "tests" / module).is_file() or (name and name not in defined_tests(module))
    ]
    assert missing == [], f"docs/security.md names tests that do not exist: {missing}"
    unnamed = [
        f"{module}::{name}"
        for module in ATTACK_MODULES
        for name in sorted(defined_tests(module))
        if f"{module}::{name}" not in doc
    ]
    assert unnamed == [], f"attack tests missing from docs/security.md: {unnamed}"
