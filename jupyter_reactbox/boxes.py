"""Each project's work tree on a filesystem of its own: quotas the kernel keeps.

A quota checked every so often is not a quota: a dev server that creates files
in a loop fills the disk (or its inodes) between two checks, and every other
project and the server itself get ``ENOSPC``.  Where this server can mount
filesystems (``c.ReactBoxApp.disk_limits``; it must run as root), a project's
work tree lives instead in an ext4 image of its own::

    <project>/
      box.img       the image: its size is disk_quota, its inodes file_quota;
                    sparse, so it takes on the host only what is written in it
      box/          where it is mounted (nodev, nosuid; freed blocks go back)
        app/        the work tree, the only folder a sandbox sees
        .install-*  what an install stages for it (so moving the installed
        .modules-*  tree in stays a rename)
      history.git/  project.json  install.log  ...   beside it, never in it

A sandbox that writes past the image's size or inodes gets ``ENOSPC`` at once,
inside its own project; the history, state and logs beside the image, the
other projects and the server's own folders keep their space.  Where the
server cannot mount (not root, no loop devices, no ``mkfs.ext4``), projects
are plain folders and the quotas are checked as before (``probes``), which
``jupyter reactbox doctor`` warns about.

Nothing in the work tree names anything here: the image and its mount point
are the server's, beside ``app/``, and only the server mounts or unmounts them.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

from .errors import BoxError

BOX = "box"
IMAGE = "box.img"
APP = "app"
MOUNT_OPTIONS = "loop,nodev,nosuid,discard"
MIN_SIZE = 64 << 20
"""An image is never smaller than this (a project with a tiny quota still mounts)."""
MIN_INODES = 2048
DEFAULT_SIZE = 4 << 30
"""The image's size where the project has no byte quota (disk_quota 0)."""
DEFAULT_INODES = 1_000_000


def problem() -> str | None:
    """Why this server cannot keep projects on filesystems of their own, or None."""
    if os.geteuid() != 0:
        return "the server does not run as root, so it cannot mount a filesystem per project"
    for tool in ("mkfs.ext4", "mount", "umount", "e2fsck"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian, Ubuntu: apt-get install e2fsprogs mount)"
    if not Path("/dev/loop-control").exists():
        return "this host has no loop devices (/dev/loop-control)"
    return None


def boxed(folder: Path) -> bool:
    """Whether the project in ``folder`` keeps its work tree in an image."""
    return (folder / IMAGE).is_file()


def work_tree(folder: Path) -> Path:
    """The project's work tree (``app``), in its image where it has one."""
    return folder / BOX / APP if boxed(folder) else folder / APP


def folder_of(app_dir: Path) -> Path:
    """The project folder of a work tree (``work_tree`` read backwards)."""
    parent = app_dir.parent
    if parent.name == BOX and boxed(parent.parent):
        return parent.parent
    return parent


def make(folder: Path, *, size: int, inodes: int) -> Path:
    """A new image in ``folder`` (``size`` bytes, ``inodes`` files and folders; 0:
    the defaults), mounted: the path of the work tree in it (not made yet)."""
    image = folder / IMAGE
    size = max(size or DEFAULT_SIZE, MIN_SIZE)
    inodes = max(inodes or DEFAULT_INODES, MIN_INODES)
    (folder / BOX).mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    try:
        options = ["-q", "-F", "-N", str(inodes), "-m", "0", "-O", "^has_journal"]
        _run(["mkfs.ext4", *options, "-E", "lazy_itable_init=1,nodiscard", str(image)])
        mount(folder, check=False)
        shutil.rmtree(folder / BOX / "lost+found", ignore_errors=True)
        return folder / BOX / APP
    except BaseException:
        unmount(folder)
        image.unlink(missing_ok=True)
        raise


def mounted(folder: Path) -> bool:
    return os.path.ismount(folder / BOX)


def mount(folder: Path, *, check: bool = True) -> None:
    """Mount the project's image at ``box/`` (checked first: it has no journal, so a
    host that died while it was written leaves it for ``e2fsck`` to put right)."""
    if mounted(folder):
        return
    image = folder / IMAGE
    if check:
        subprocess.run(["e2fsck", "-p", str(image)], capture_output=True, timeout=300)
    (folder / BOX).mkdir(exist_ok=True)
    _run(["mount", "-o", MOUNT_OPTIONS, str(image), str(folder / BOX)])


def unmount(folder: Path, *, lazily: bool = True) -> None:
    """Unmount the project's image.  ``lazily``: if a process still has it open, it is
    detached now and freed when that process ends; only for a project whose dev
    server is gone for good (a delete), never one that may mount it again (a lazily
    detached image mounted a second time is two filesystems on one file)."""
    if not mounted(folder):
        return
    try:
        _run(["umount", str(folder / BOX)])
    except BoxError:
        if not lazily:
            raise
        _run(["umount", "-l", str(folder / BOX)])


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BoxError(errno.EIO, f"{argv[0]} failed: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        full = "No space left" in done.stderr
        raise BoxError(errno.ENOSPC if full else errno.EIO, f"{argv[0]} failed: {why}")
