"""docs/security.md names the tests behind each promise: they must exist, every
attack test must be named there, and every attack names its promises and result."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "security.md"
ATTACK_MODULES = (
    "test_attacks.py",
    "test_supply.py",
    "test_faults.py",
    "test_hub.py",
    "test_worktree_attacks.py",
    "test_hostile.py",
    "test_egress.py",
    "test_origin_mode.py",
    "test_local.py",
    "test_builds.py",
    "test_mcp.py",
    "test_agent.py",
)
PROMISES = {str(n) for n in range(1, 10)}


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


def test_every_attack_names_its_promises_and_its_result():
    section = DOC.read_text().split("## Attacks and their results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`test_" in line]
    assert len(rows) >= 20
    for row in rows:
        attack, promises, result, tests = (cell.strip() for cell in row.strip("|").split(" | "))
        assert attack and result and tests.startswith("`test_"), row
        assert set(promises.replace(" ", "").split(",")) <= PROMISES, row
    numbered = re.findall(r"^(\d)\. \*\*", DOC.read_text(), re.M)
    assert numbered[: len(PROMISES)] == sorted(PROMISES, key=int), "the promises, in order"
