"""Building the sandbox image, with a registry or without one.

``build_online`` builds ``image/Dockerfile`` (it pulls ``node:20-bookworm-slim``).
``build_offline`` needs no container registry at all, for air-gapped hosts: a
Debian root filesystem made by ``debootstrap`` from the host's own apt mirror,
plus the host's Node.js, npm and corepack, imported with ``docker import``.
Both give the same layout: user 1000 (``reactbox``), ``/project``, ``/cache``,
``HOME=/tmp``, and the package managers installs use (``managers.SHIPPED``)
under ``/opt/reactbox/pm``, packed from the package registry by the host's npm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from . import managers
from .errors import BuildError

IMAGE_DIR = Path(__file__).parent / "image"
LABEL = "org.jupyter.reactbox.image"
LAYOUT = "3"
"""The image's layout (what the server expects to find in it); an image of an
older layout is rebuilt by ``build-image`` without ``--force``."""
_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV HOME=/tmp",
    "ENV NPM_CONFIG_UPDATE_NOTIFIER=false",
    f'LABEL {LABEL}="sandbox"',
    f'LABEL {LABEL}.layout="{LAYOUT}"',
    "USER 1000:1000",
    "WORKDIR /project",
]


def host_apt_mirror(etc: Path = Path("/etc/apt")) -> str | None:
    """The first Debian archive (not the security one) the host's apt uses."""
    candidates: list[str] = []
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        candidates += re.findall(r"^URIs:\s*(\S+)", path.read_text(), flags=re.M)
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            candidates += re.findall(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), flags=re.M
            )
    return next((uri for uri in candidates if "security" not in uri), None)


def host_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=(\w+)", text, flags=re.M)
    return match.group(1) if match else "bookworm"


def host_node() -> tuple[Path, Path]:
    """The host's node binary and the folder holding its global npm and corepack."""
    node = shutil.which("node")
    if not node:
        raise BuildError("No `node` on this host's PATH; install Node.js 20 or newer.")
    node_path = Path(node).resolve()
    version = subprocess.run([node_path, "--version"], capture_output=True, text=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 20:
        raise BuildError(f"The host's Node.js is {version.strip()}; the sandbox needs 20 or newer.")
    for modules in (
        node_path.parent.parent / "lib" / "node_modules",
        Path("/usr/lib/node_modules"),
    ):
        if (modules / "npm" / "bin" / "npm-cli.js").is_file():
            return node_path, modules
    raise BuildError("Found node but not the npm that belongs to it (lib/node_modules/npm).")


def _add_node(rootfs: Path, node: Path, modules: Path) -> None:
    local = rootfs / "usr" / "local"
    (local / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(node, local / "bin" / "node")
    for name in ("npm", "corepack"):
        if (modules / name).is_dir():
            shutil.copytree(modules / name, local / "lib" / "node_modules" / name, symlinks=True)
    links = {
        "npm": "../lib/node_modules/npm/bin/npm-cli.js",
        "npx": "../lib/node_modules/npm/bin/npx-cli.js",
        "corepack": "../lib/node_modules/corepack/dist/corepack.js",
    }
    for name, target in links.items():
        if (local / "bin" / target).resolve().is_file():
            (local / "bin" / name).symlink_to(target)


def fetch_managers(
    dest: Path, say: Callable[[str], None] = print, npm: list[str] | None = None
) -> None:
    """Unpack each of ``managers.SHIPPED`` into ``dest/<tool>``, packed from the
    package registry by the host's npm (its registry, its CA, its proxy), or by
    the ``npm`` argv given."""
    if npm is None:
        found = shutil.which("npm")
        if not found:
            raise BuildError("No `npm` on this host's PATH; it fetches yarn and pnpm.")
        npm = [found]
    with tempfile.TemporaryDirectory(prefix="reactbox-pm-") as tmp:
        for tool, spec in managers.SHIPPED.items():
            spec = managers.bun_package(spec)
            say(f"npm pack {spec} ...")
            result = subprocess.run(
                [*npm, "pack", spec, "--json", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            if result.returncode:
                raise BuildError(f"npm pack {spec} failed:\n{result.stderr[-2000:]}")
            filename = json.loads(result.stdout)[0]["filename"]
            target = dest / tool
            target.mkdir(parents=True)
            with tarfile.open(Path(tmp) / filename) as tar:
                for member in tar.getmembers():
                    _, _, rest = member.name.partition("/")  # each npm tarball has one top folder
                    if not rest:
                        continue
                    member.name = rest
                    tar.extract(member, target, filter="data")
            os.chmod(target / managers.entry(tool).split(f"/{tool}/", 1)[1], 0o755)


def _add_user(rootfs: Path) -> None:
    with open(rootfs / "etc" / "passwd", "a") as f:
        f.write("reactbox:x:1000:1000:jupyter-reactbox:/tmp:/usr/sbin/nologin\n")
    with open(rootfs / "etc" / "group", "a") as f:
        f.write("reactbox:x:1000:\n")
    for name in ("project", "cache"):
        (rootfs / name).mkdir(exist_ok=True)
        os.chown(rootfs / name, 1000, 1000)
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)


def split_tag(tag: str) -> tuple[str, str]:
    """'repo/name:1.0' -> ('repo/name', '1.0'); a tag-less name gets 'latest'."""
    name, sep, version = tag.rpartition(":")
    if sep and "/" not in version:
        return name, version
    return tag, "latest"


def build_offline(
    tag: str,
    *,
    mirror: str | None = None,
    suite: str | None = None,
    client: docker.DockerClient | None = None,
    say: Callable[[str], None] = print,
) -> str:
    """Build the sandbox image with no container registry; return its id."""
    if os.geteuid() != 0:
        raise BuildError("--offline runs debootstrap, which needs root.")
    if not shutil.which("debootstrap"):
        raise BuildError("--offline needs debootstrap: apt-get install -y debootstrap")
    mirror = mirror or host_apt_mirror()
    if not mirror:
        raise BuildError("Found no Debian mirror in /etc/apt; pass --mirror URL.")
    suite = suite or host_codename()
    node, modules = host_node()
    client = client or docker.from_env()
    with tempfile.TemporaryDirectory(prefix="reactbox-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap {suite} (minbase) from the host's apt mirror ...")
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                suite,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise BuildError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        say(f"adding the host's Node.js ({node}) and npm/corepack ...")
        _add_node(rootfs, node, modules)
        fetch_managers(rootfs / managers.PM_DIR.lstrip("/"), say)
        _add_user(rootfs)
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            for entry in sorted(rootfs.iterdir()):
                tar.add(entry, arcname=entry.name)
        say(f"docker import as {tag} ...")
        repository, version = split_tag(tag)
        client.api.import_image_from_file(
            str(tar_path), repository=repository, tag=version, changes=_CHANGES
        )
    image = client.images.get(tag)
    say(f"built {tag} ({image.short_id})")
    return image.id


def build_online(
    tag: str, *, client: docker.DockerClient | None = None, say: Callable[[str], None] = print
) -> str:
    client = client or docker.from_env()
    with tempfile.TemporaryDirectory(prefix="reactbox-context-") as context:
        shutil.copy(IMAGE_DIR / "Dockerfile", context)
        fetch_managers(Path(context) / "pm", say)
        image, logs = client.images.build(
            path=context, tag=tag, rm=True, pull=True, buildargs={"LAYOUT": LAYOUT}
        )
        for chunk in logs:
            if "stream" in chunk:
                say(chunk["stream"].rstrip())
    return image.id


def layout(client: docker.DockerClient, tag: str) -> str | None:
    """The layout of the image ``tag`` (None: missing or unlabelled)."""
    try:
        labels = client.images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        return None
    return labels.get(f"{LABEL}.layout", "1")
