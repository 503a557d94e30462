"""The exceptions jupyter-reactbox raises.

Every error a user can cause is a ``UserError`` that carries the HTTP status
the REST API answers with; its message says what happened and how to fix it.
Errors of the Docker SDK are mapped to ``SandboxError`` at one boundary
(``sandbox/docker.py``) with ``raise ... from exc``.

    ReactBoxError
    ├── UserError                 (4xx, the message is shown to the user)
    │   ├── ArchiveError          400  the upload is not a safe ZIP of an app
    │   │   └── ArchiveTooLarge   413  a size, count or ratio limit was hit
    │   ├── UnsupportedApp        422  no framework we know how to run
    │   ├── ProjectNotFound       404
    │   ├── ProjectExists         409
    │   ├── InvalidName           400
    │   ├── TooManyPreviews       429  max_running reached, none can be stopped
    │   ├── TooManyStreams        429  too many followed logs are open at once
    │   ├── Busy                  429  the line to install, start or edit is full
    │   └── QuotaExceeded         413  a project outgrew its disk quota
    ├── DiskFull                  507  no space left where the projects live
    └── SandboxError              500  the container engine failed
        └── EngineUnavailable     503  the engine or the image is missing
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class ReactBoxError(Exception):
    """Base class of every error raised by jupyter-reactbox."""

    status = 500


class UserError(ReactBoxError):
    """Something the user can fix; the message says how."""

    status = 400


class ArchiveError(UserError):
    status = 400


class ArchiveTooLarge(ArchiveError):
    status = 413


class UnsupportedApp(UserError):
    status = 422


class InstallFailed(UnsupportedApp):
    """The app's dependencies did not install (its lockfile, a missing package, ...)."""


class ProjectNotFound(UserError):
    status = 404


class ProjectExists(UserError):
    status = 409


class InvalidName(UserError):
    status = 400


class TooManyPreviews(UserError):
    status = 429


class TooManyStreams(UserError):
    status = 429


class Busy(UserError):
    """Too many wait already for this kind of work (``admission.py``): try again after
    ``retry_after`` seconds (the API's ``Retry-After``)."""

    status = 429

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(UserError):
    status = 413


class DiskFull(ReactBoxError):
    status = 507

    def __init__(self, where: object = "the projects folder"):
        super().__init__(
            f"No space is left on the disk of {where}. Nothing was changed: free some "
            "space (delete a project, or ask your admin), then try again."
        )

    @classmethod
    def at(cls, root: Path) -> DiskFull:
        """The error for a write refused for space under the projects folder ``root``:
        its disk is full, or else a project's own filesystem is (``boxes``)."""
        if shutil.disk_usage(root).free >= 1 << 20:
            return cls(
                "the project (its own filesystem is full: its quota is "
                "c.ReactBoxApp.disk_quota and file_quota; remove files from it)"
            )
        return cls(root)


def is_disk_full(exc: BaseException) -> bool:
    """An OSError of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class SandboxError(ReactBoxError):
    status = 500


class BackendUnavailable(SandboxError):
    """The backend cannot run dev servers here (no engine, no sandbox where one is
    required)."""

    status = 503


class EngineUnavailable(BackendUnavailable):
    status = 503
