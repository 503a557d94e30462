"""What an admin sees: the installed extension, its settings, and `jupyter reactbox`."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets import TraitType

from jupyter_reactbox.app import ReactBoxApp
from jupyter_reactbox.backends.docker import DockerBackend
from jupyter_reactbox.backends.local import LocalBackend
from jupyter_reactbox.cli import configurables, configuration_reference


def jupyter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=120
    )


def test_server_extension_is_enabled_and_ok():
    out = jupyter("server", "extension", "list")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert "jupyter_reactbox enabled" in text
    assert "jupyter_reactbox 0.1.0 OK" in text


@pytest.mark.parametrize("cls", configurables(), ids=lambda cls: cls.__name__)
def test_every_setting_is_documented(cls):
    """In the commented config file `jupyter reactbox settings` prints, and in the
    docs' configuration reference (docs/settings.md), with its help."""
    traits: dict[str, TraitType] = cls.class_own_traits(config=True)
    assert len(traits) >= (15 if cls is ReactBoxApp else 3)  # the traits were found
    undocumented = [name for name, trait in traits.items() if not (trait.help or "").strip()]
    assert undocumented == []
    documented = jupyter("reactbox", "settings").stdout
    reference = configuration_reference()
    for name, trait in traits.items():
        assert f"# c.{cls.__name__}.{name} = " in documented
        assert trait.help.split()[0] in documented
        entry = reference.split(f"`c.{cls.__name__}.{name}`\n", 1)[1].split("\n\n", 1)[0]
        assert " ".join(trait.help.split()) in entry


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
        DockerBackend(uid=0)


def heard(app) -> list[str]:
    """What ``app`` logs from now on, each message as it reads."""
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    app.log.addHandler(handler)
    return said


def test_settings_that_moved_to_the_docker_backend_still_apply_with_a_warning():
    from traitlets.config import Config

    config = Config()
    config.ReactBoxApp.backend = "docker"
    config.ReactBoxApp.memory_limit = "300m"
    config.ReactBoxApp.docker_runtime = "runsc"
    config.ReactBoxApp.pids_limit = 64
    config.DockerBackend.pids_limit = 99  # the new name wins
    app = ReactBoxApp(config=config)
    said = heard(app)
    backend = app._make_backend("alice", "", "/tmp/cache")
    assert isinstance(backend, DockerBackend)
    assert (backend.memory_limit, backend.runtime, backend.pids_limit) == ("300m", "runsc", 99)
    warned = "\n".join(said)
    assert "c.ReactBoxApp.memory_limit is deprecated: use c.DockerBackend.memory_limit" in warned
    assert "c.ReactBoxApp.docker_runtime is deprecated: use c.DockerBackend.runtime" in warned


def test_settings_every_backend_has_are_the_backends_and_old_names_warn():
    """c.Backend.<name> sets what every backend has; c.ReactBoxApp's old names still
    do, with a warning, unless the backend's own section sets the same."""
    from traitlets.config import Config

    config = Config()
    config.ReactBoxApp.backend = "local"
    config.Backend.install_timeout = 60.0
    config.ReactBoxApp.npm_registry = "https://mirror.example/"
    config.ReactBoxApp.ignore_scripts = False
    config.LocalBackend.ignore_scripts = True  # the backend's own section wins
    app = ReactBoxApp(config=config)
    said = heard(app)
    backend = app._make_backend("alice", "", "/tmp/cache")
    assert isinstance(backend, LocalBackend)
    assert backend.install_timeout == 60.0
    assert (backend.registry, backend.ignore_scripts) == ("https://mirror.example/", True)
    installer = backend.installer
    assert (installer.ignore_scripts, installer.cache_dir) == (True, Path("/tmp/cache"))
    warned = "\n".join(said)
    assert "c.ReactBoxApp.npm_registry is deprecated: use c.Backend.registry" in warned
    assert "c.ReactBoxApp.ignore_scripts is deprecated: use c.Backend.ignore_scripts" in warned


def test_the_lifecycle_and_line_settings_are_their_owners_and_old_names_warn(tmp_path):
    from traitlets.config import Config

    config = Config()
    config.ReactBoxApp.backend = "local"
    config.ReactBoxApp.idle_timeout = 30.0
    config.ReactBoxApp.preview_cache = "1m"
    config.ReactBoxApp.max_running = 9
    config.Runtime.max_running = 2  # the new name wins
    config.Runtime.on_shutdown = "keep"
    config.ReactBoxApp.max_starts = 3
    config.Admission.max_queued = 7
    config.Admission.start_memory = "1g"
    app = ReactBoxApp(config=config)
    said = heard(app)
    space = app.make_space(
        "alice", base_url="/", projects_dir=tmp_path / "projects", cache_dir=tmp_path / "cache"
    )
    runtime = space.runtime
    assert (runtime.idle_timeout, runtime.preview_cache) == (30.0, 1 << 20)
    assert (runtime.max_running, runtime.on_shutdown, runtime.start_timeout) == (2, "keep", 180)
    lines = app.admission  # the lines of work are the Admission's (c.Admission)
    assert (lines["start"].limit, lines["install"].max_queued) == (3, 7)
    assert (lines.memory.per_start, lines["edit"].limit) == (1 << 30, lines.max_edits)
    warned = "\n".join(said)
    assert "c.ReactBoxApp.max_starts is deprecated: use c.Admission.max_starts" in warned
    assert "c.ReactBoxApp.idle_timeout is deprecated: use c.Runtime.idle_timeout" in warned
    assert "c.ReactBoxApp.preview_cache is deprecated: use c.Runtime.preview_cache" in warned


def test_doctor_asks_the_backend_it_would_use():
    """Each backend says what it needs here: the local one its Node.js, npm and
    sandbox, and nothing of an engine."""
    said = jupyter("reactbox", "doctor", "--backend", "local")
    assert said.returncode == 0, said.stdout
    assert re.search(r"ok +Node\.js v\d+", said.stdout), said.stdout
    assert "ok   npm at " in said.stdout and "sandbox: " in said.stdout
    assert "Docker engine " not in said.stdout and "sandbox image" not in said.stdout
    assert "image jupyter-reactbox" not in said.stdout


def test_settings_that_moved_to_the_ai_editor_still_apply_with_a_warning(tmp_path, monkeypatch):
    from traitlets.config import Config

    from jupyter_reactbox.runtime import Runtime
    from jupyter_reactbox.store import ProjectStore

    config = Config()
    config.ReactBoxApp.ai_base_url = "http://127.0.0.1:9/v1"
    config.ReactBoxApp.ai_model = "old-name"
    config.ReactBoxApp.ai_daily_tokens = 100
    config.AIEditor.daily_tokens = 250  # the new name wins
    app = ReactBoxApp(config=config)
    said = heard(app)
    store = ProjectStore(tmp_path / "projects")
    backend = LocalBackend(owner="alice", cache_dir=str(tmp_path / "cache"))
    editor = app._make_editor(Runtime(store, backend, base_url="/"))
    assert editor is not None
    assert (editor.base_url, editor.model, editor.daily_tokens) == (
        "http://127.0.0.1:9/v1",
        "old-name",
        250,
    )
    assert editor.budget is not None and editor.budget.daily == 250
    assert str(editor.client.base_url).startswith("http://127.0.0.1:9/v1")
    warned = "\n".join(said)
    assert "c.ReactBoxApp.ai_model is deprecated: use c.AIEditor.model" in warned
    # No model, no editor: the API says how to set one (503).
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert ReactBoxApp(config=Config())._make_editor(Runtime(store, backend, base_url="/")) is None


def test_a_backend_is_chosen_by_name_class_or_entry_point():
    from jupyter_reactbox.backends import backend_class

    assert backend_class("docker") is DockerBackend
    assert backend_class("local") is LocalBackend
    assert backend_class(LocalBackend) is LocalBackend
    assert backend_class("jupyter_reactbox.backends.local.LocalBackend") is LocalBackend
    with pytest.raises(ValueError, match="No backend 'nosuch'"):
        backend_class("nosuch")
    with pytest.raises(ValueError, match="is not a jupyter_reactbox Backend"):
        backend_class("jupyter_reactbox.app.ReactBoxApp")
