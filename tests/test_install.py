"""What an admin sees: the installed extension, its settings, and `jupyter reactbox`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from traitlets import TraitType

from jupyter_reactbox.app import ReactBoxApp


def jupyter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=120
    )


def test_server_extension_is_enabled_and_ok():
    out = jupyter("server", "extension", "list")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert "jupyter_reactbox enabled" in text
    assert "jupyter_reactbox 0.1.0 OK" in text


def test_every_setting_is_documented():
    traits: dict[str, TraitType] = ReactBoxApp.class_own_traits(config=True)
    assert len(traits) >= 20
    undocumented = [name for name, trait in traits.items() if not (trait.help or "").strip()]
    assert undocumented == []
    documented = jupyter("reactbox", "settings").stdout
    for name, trait in traits.items():
        assert f"# c.ReactBoxApp.{name} = " in documented
        assert trait.help.split()[0] in documented


@pytest.mark.docker
def test_doctor_says_what_is_missing(sandbox_image):
    ok = jupyter("reactbox", "doctor", "--image", sandbox_image)
    assert ok.returncode == 0, ok.stdout
    assert "all good" in ok.stdout

    missing = jupyter("reactbox", "doctor", "--image", "no-such-image:0", "--runtime", "nosuch")
    assert missing.returncode == 1
    assert "no-such-image:0 is missing. Run `jupyter reactbox build-image`" in missing.stdout
    assert "runtime 'nosuch' is unknown to the engine" in missing.stdout
    assert "2 problem(s) found" in missing.stdout


def test_owner_and_ids_are_validated():
    app = ReactBoxApp()
    app.owner = "Alice Smith@Example"
    assert app.owner == "alice-smith-example"
    with pytest.raises(Exception, match="non-root"):
        app.sandbox_uid = 0
