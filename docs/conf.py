"""The jupyter-reactbox docs: MyST Markdown, the PyData theme, and two pages made
from the code at build time (the configuration reference from the traits, and the
REST API's OpenAPI document).  Build: sphinx-build -W -b html docs docs/_build/html"""

from __future__ import annotations

from pathlib import Path

from jupyter_reactbox import __version__
from jupyter_reactbox.cli import configuration_reference

HERE = Path(__file__).parent

project = "jupyter-reactbox"
author = "the jupyter-reactbox developers"
copyright = "the jupyter-reactbox developers"  # noqa: A001 (Sphinx's name)
release = version = __version__

extensions = ["myst_parser"]
myst_enable_extensions = ["deflist", "colon_fence"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_generated"]  # _generated: included by the pages

html_theme = "pydata_sphinx_theme"
html_title = "jupyter-reactbox"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}


def _generate(app) -> None:
    """The pages made from the code: written before the build reads the sources."""
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    (out / "configuration.md").write_text(configuration_reference())


def setup(app):
    app.connect("builder-inited", _generate)
