"""The local backend (``backend.py``) and how it runs commands in bubblewrap
(``sandbox.py``)."""

from .backend import LocalBackend
from .sandbox import bubblewrap_problem, process_tree

__all__ = ["LocalBackend", "bubblewrap_problem", "process_tree"]
