"""Every exception jupyter-reactbox raises, in one tree.

Every error a user can cause is a ``UserError`` that carries the HTTP status the
REST API answers with; its message says what happened and how to fix it.  The
handlers never build an HTTP error of their own: they raise these, and one place
(``api.BaseHandler.write_error``, the proxy's and the hub service's alike) turns
them into the JSON (or, for a page, the text) of that status.  Errors of the
Docker SDK are mapped to ``SandboxError`` at one boundary
(``backends/docker.py``) with ``raise ... from exc``.

    ReactBoxError
    ├── UserError                 (4xx, the message is shown to the user)
    │   ├── BadRequest            400  a request the API cannot take as sent
    │   ├── Forbidden             403  not this caller's to ask (or a dead link)
    │   ├── NotFound              404  no such thing here (ProjectNotFound: no project)
    │   ├── TooLarge              413  a body over its limit
    │   ├── WrongContentType      415  a body of a type the route does not take
    │   ├── ArchiveError          400  the upload is not a safe ZIP of an app
    │   │   └── ArchiveTooLarge   413  a size, count or ratio limit was hit
    │   ├── UnsupportedApp        422  no framework we know how to run
    │   │   └── InstallFailed          its dependencies did not install
    │   ├── ProjectNotFound       404
    │   ├── ProjectExists         409
    │   ├── InvalidName           400
    │   ├── TooManyPreviews       429  max_running reached, none can be stopped
    │   ├── TooManyStreams        429  too many followed logs are open at once
    │   ├── Busy                  429  the line to install, start or edit is full
    │   ├── QuotaExceeded         413  a project outgrew its disk quota
    │   ├── files: FileNotInProject 404, NotAText 415, SyntaxRefused 422,
    │   │   ChangedMeanwhile 409, NotAFile 422, TooManyFiles 413
    │   ├── history: HistoryError 409, NoSuchPoint 404
    │   ├── builds and shares: NoBuild 422 (the app has no build that runs here),
    │   │   AppBuildFailed 422, TooManyBuilds 429, TooManyShares 429
    │   └── AI edits: EditError 422 (UnsafePath), PlaceError 400, PlaceGone 422,
    │       OverBudget 429, EditBusy 409, NoProposal 404, ProposalStale 409,
    │       ImageError 400 (ImageTooLarge 413), NothingToFix 422, AIUnavailable 503,
    │       AgentOff 422 (agent mode is not on here)
    ├── DiskFull                  507  no space left where the projects live
    ├── NotAnswering              502  the dev server (or the hub service) does not answer
    ├── ServiceRefused                 the hub service's refusal, relayed (its status)
    ├── ManagedElsewhere          503  another Jupyter server manages the projects
    ├── ModelError                     the model gave no usable answer
    ├── BrowserError, ScreenshotError  422  the headless browser could not load a page
    ├── Refused                        a bridge message refused (its own status)
    ├── BuildError                     the sandbox image did not build
    ├── NotAPackage                    (inside the package checks)
    ├── ReactBoxClientError            the kernel's client, as one line
    └── SandboxError              500  the container engine failed
        └── BackendUnavailable    503  no backend can run dev servers here
            └── EngineUnavailable 503  the engine or the image is missing

    OSError
    └── BoxError                       a project's filesystem failed (its errno:
                                       ENOSPC is a full disk, so DiskFull)
"""

from __future__ import annotations

import errno
import json
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


class NoBuild(UserError):
    """The app has no production build this server can run (``builds.py``)."""

    status = 422


class AppBuildFailed(UserError):
    """The app's production build did not finish: its first error line first."""

    status = 422


class TooManyBuilds(UserError):
    status = 429


class TooManyShares(UserError):
    status = 429


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


class BadRequest(UserError):
    """A request the API cannot take as sent (its body, a parameter); the message
    says what it takes."""

    status = 400


class Forbidden(UserError):
    status = 403


class NotFound(UserError):
    status = 404


class TooLarge(UserError):
    """A body over the limit of what it is (data, a page's storage)."""

    status = 413


class WrongContentType(UserError):
    status = 415


class NotAnswering(ReactBoxError):
    """The dev server does not answer (it may be starting, or it stopped), or the
    hub service a server relays to does not."""

    status = 502


class ManagedElsewhere(ReactBoxError):
    """The projects folder is another Jupyter server's, which cannot be reached or
    serves elsewhere (peer.py)."""

    status = 503


class ServiceRefused(ReactBoxError):
    """The hub service refused what a user's server relayed to it, with its status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


# -- the project's files (files.py, worktree.py) and history (history.py) -------


class FileNotInProject(UserError):
    status = 404


class NotAText(UserError):
    status = 415


class SyntaxRefused(UserError):
    status = 422


class ChangedMeanwhile(UserError):
    status = 409


class NotAFile(UserError):
    """A link, a folder, a FIFO or a device where the server expected a regular file
    (or a folder), or a file over the size limit."""

    status = 422


class TooManyFiles(UserError):
    status = 413


class HistoryError(UserError):
    status = 409


class NoSuchPoint(UserError):
    status = 404


# -- AI edits (ai/) --------------------------------------------------------------


class EditError(UserError):
    """The answer cannot be applied; the message is fed back to the model."""

    status = 422


class UnsafePath(EditError):
    """A path outside the project (or into .git / node_modules)."""


class PlaceError(UserError):
    status = 400


class PlaceGone(UserError):
    """The place is not in the project (any more): the file changed since it was picked."""

    status = 422


class OverBudget(UserError):
    status = 429


class EditBusy(UserError):
    status = 409


class NoProposal(UserError):
    status = 404


class ProposalStale(UserError):
    """The files changed since the change was proposed, or another was proposed."""

    status = 409


class ImageError(UserError):
    status = 400


class NothingToFix(UserError):
    """A fix was asked for, and the page reported no error."""

    status = 422


class AgentOff(UserError):
    """An agent's edit was asked for where the admin has not turned agent mode on."""

    status = 422


class ImageTooLarge(ImageError):
    status = 413


class AIUnavailable(UserError):
    """No model is configured for this server (or this user)."""

    status = 503


class ModelError(ReactBoxError):
    """The model endpoint could not give a usable answer."""


# -- the server's own tools ------------------------------------------------------


class BrowserError(ReactBoxError):
    """The page could not be loaded; the message says why (headless.py)."""

    status = 422


class ScreenshotError(ReactBoxError):
    """No screenshot could be taken; the message says why (the edit goes on without)."""

    status = 422


class Refused(ReactBoxError):
    """What a page asked of the bridge cannot be done: its type, message and
    HTTP-like status (bridge.py)."""

    def __init__(self, kind: str, message: str, status: int):
        super().__init__(message)
        self.kind, self.status = kind, status

    def body(self) -> str:
        return json.dumps({"type": self.kind, "message": str(self), "status": self.status})


class BuildError(ReactBoxError):
    """The sandbox image did not build (image.py)."""


class BoxError(OSError):
    """A project's filesystem could not be made, mounted or unmounted (boxes.py).
    An OSError, not a ReactBoxError: its errno says whether the disk is full, and
    wherever an OSError of a full disk is met it becomes ``DiskFull``."""


class NotAPackage(ReactBoxError):
    """What the package checks met is not a package (backends/packages.py)."""


class ReactBoxClientError(ReactBoxError):
    """Anything that went wrong in the kernel's client, as one line a person can act
    on; ``status`` is the server's answer, where there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
