"""The code's own rules, checked on the installed package: every exception in one
tree (``errors.py``), and handlers that raise those errors rather than build HTTP
errors by hand (``answers.py`` answers them)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import tomllib

import jupyter_reactbox
from jupyter_reactbox import errors
from jupyter_reactbox.backends import BUILT_IN

ROOT = Path(__file__).parent.parent


def modules():
    for info in pkgutil.walk_packages(jupyter_reactbox.__path__, "jupyter_reactbox."):
        yield importlib.import_module(info.name)


def test_every_exception_class_is_in_errors_py():
    elsewhere = sorted(
        f"{module.__name__}.{name}"
        for module in modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and module is not errors
    )
    assert elsewhere == []
    # ... and each of ours is in the tree the module's docstring draws.
    ours = [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]  # fmt: skip
    assert len(ours) > 40
    assert [name for name in ours if name not in errors.__doc__] == []


def test_no_handler_builds_an_http_error_of_its_own():
    """They raise ours; ``answers.py`` gives each its status and message."""
    built = []
    for module in modules():
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "HTTPError":
                built.append(f"{module.__name__}:{node.lineno}")
    assert built == []


def test_the_built_in_backends_are_named_once():
    """The names ``c.ReactBoxApp.backend`` takes are the package's entry points."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    points = project["project"]["entry-points"]["jupyter_reactbox.backends"]
    assert {name: target.replace(":", ".") for name, target in points.items()} == BUILT_IN
