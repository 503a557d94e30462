"""jupyter-reactbox: live, isolated previews of uploaded React apps in Jupyter."""

from ._version import __version__


def _jupyter_server_extension_points():
    from .app import ReactBoxApp

    return [{"module": "jupyter_reactbox.app", "app": ReactBoxApp}]


def _jupyter_labextension_paths():
    # Built from labextension/ into jupyter_reactbox/labextension (see pyproject.toml).
    return [{"src": "labextension", "dest": "jupyter-reactbox"}]


def load_ipython_extension(ipython):
    """``%load_ext jupyter_reactbox``: the ``%reactbox`` magics."""
    from .kernel.magics import ReactBoxMagics

    ipython.register_magics(ReactBoxMagics)


def project(name: str):
    """The project called ``name`` on this kernel's Jupyter server (``connect().project``):
    ``shop = jupyter_reactbox.project("shop")``, then ``shop.expose(fn)``, ``shop.send(...)``."""
    from .kernel.client import connect

    return connect().project(name)


def __getattr__(name):
    # ``from jupyter_reactbox import ReactBox`` without importing ipywidgets on the server.
    if name == "ReactBox":
        from .kernel.widget import ReactBox

        return ReactBox
    if name == "connect":
        from .kernel.client import connect

        return connect
    raise AttributeError(name)


__all__ = ["ReactBox", "__version__", "connect", "load_ipython_extension", "project"]
