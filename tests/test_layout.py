"""The code's own rules, checked on the installed package: every exception in one
tree (``errors.py``), and REST handlers that raise those errors rather than build
HTTP errors by hand."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import jupyter_reactbox
from jupyter_reactbox import api, errors


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


def test_the_api_handlers_build_no_http_error_but_in_one_place():
    tree = ast.parse(inspect.getsource(api))
    built: list[str] = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "HTTPError"
            ):
                built.append(func.name)
    assert sorted(set(built)) == ["maps_errors", "wrapper"]  # a ReactBoxError to its status
