"""docs/openapi.yaml against the server: every route and method the REST API serves
is documented and nothing else is, the document's schemas are what
jupyter_reactbox/schema.py generates, and the document is valid OpenAPI 3.1."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from openapi_spec_validator import validate
from tornado import web

from jupyter_reactbox import api, schema

DOCUMENT = Path(__file__).parent.parent / "docs" / "openapi.yaml"
METHODS = ("get", "post", "put", "patch", "delete")
GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)")
OPTIONAL = re.compile(r"\(\?:(/\(\?P<\w+>[^()]*\))\)\?")


def document() -> dict:
    return yaml.safe_load(DOCUMENT.read_text())


def served() -> dict[str, tuple[set[str], type]]:
    """{OpenAPI path: (methods, handler)} of the server's routes: a group of words
    (``start|stop``) is a path each, an optional tail two paths."""
    routes: dict[str, tuple[set[str], type]] = {}
    for pattern, handler, *_ in api.handlers():
        methods = {m for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)}
        path = pattern.removeprefix("/reactbox/api")
        forms = (
            [OPTIONAL.sub("", path), OPTIONAL.sub(r"\1", path)] if OPTIONAL.search(path) else [path]
        )
        for form in forms:
            expanded = [form]
            for name, body in GROUP.findall(form):
                words = body.split("|")
                if all(re.fullmatch(r"[a-z]+", w) for w in words):  # start|stop|...
                    expanded = [
                        p.replace(f"(?P<{name}>{body})", w) for p in expanded for w in words
                    ]
                else:
                    expanded = [p.replace(f"(?P<{name}>{body})", f"{{{name}}}") for p in expanded]
            for p in expanded:
                routes[p] = (methods, handler)
    return routes


def test_every_route_and_method_is_documented_and_nothing_else():
    documented = {
        path: {m for m in operations if m in METHODS}
        for path, operations in document()["paths"].items()
    }
    routes = served()
    assert sorted(documented) == sorted(routes)
    by_handler: dict[type, set[str]] = {}
    for path, (methods, handler) in routes.items():
        assert documented[path] <= methods, (path, documented[path] - methods)
        by_handler.setdefault(handler, set()).update(documented[path])
    for handler, methods in by_handler.items():  # a route's optional tail: all together
        served_methods = next(m for m, h in routes.values() if h is handler)
        assert methods == served_methods, (handler.__name__, served_methods - methods)


def test_the_documents_schemas_are_the_servers():
    assert document()["components"]["schemas"] == schema.openapi_schemas(), (
        "docs/openapi.yaml's components.schemas is not what jupyter_reactbox/schema.py "
        "generates: python -m jupyter_reactbox.schema --openapi"
    )


def test_the_document_is_valid_openapi():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    # Every reference points at something.
    text = DOCUMENT.read_text()
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in doc["components"][ref[0]], ref
