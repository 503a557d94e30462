"""jupyter-reactbox: live, isolated previews of uploaded React apps in Jupyter."""

from ._version import __version__


def _jupyter_server_extension_points():
    from .app import ReactBoxApp

    return [{"module": "jupyter_reactbox.app", "app": ReactBoxApp}]


__all__ = ["__version__"]
