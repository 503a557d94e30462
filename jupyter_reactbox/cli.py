"""``jupyter reactbox``: build the sandbox image, and check the set-up.

jupyter reactbox build-image [--offline] [--tag TAG] [--mirror URL] [--force]
jupyter reactbox doctor [--backend auto|docker|local] [--image TAG] [--runtime NAME]
jupyter reactbox settings
jupyter reactbox hub-config [--url URL] [--reach URL] [--name NAME] [--base-url PATH] [-- ARGS]
jupyter reactbox hub-service [--config FILE] [--HubService.<trait>=... ...]
jupyter reactbox mcp [--url URL] [--token TOKEN]
"""

from __future__ import annotations

import argparse
import sys

import docker
import docker.errors

from . import admission
from . import image as images
from ._version import __version__

DEFAULT_TAG = f"jupyter-reactbox-sandbox:{__version__}"


def build_image(args) -> int:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        print(f"error: cannot reach the Docker engine: {exc}", file=sys.stderr)
        print("  start dockerd (or set DOCKER_HOST) and try again.", file=sys.stderr)
        return 1
    if not args.force:
        found = images.layout(client, args.tag)
        if found == images.LAYOUT:
            print(f"{args.tag} exists; --force rebuilds it.")
            return 0
        if found is not None:
            print(f"{args.tag} has an older layout ({found}, now {images.LAYOUT}): rebuilding.")
    try:
        if args.offline:
            images.build_offline(args.tag, mirror=args.mirror, client=client)
        else:
            images.build_online(args.tag, client=client)
    except (images.BuildError, docker.errors.DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def doctor(args) -> int:
    from .backends import choose

    problems: list[str] = []

    def check(ok: bool, good: str, bad: str) -> bool:
        print(("  ok   " if ok else "  FAIL ") + (good if ok else bad))
        if not ok:
            problems.append(bad)
        return ok

    print("jupyter-reactbox doctor")
    try:
        cls, why = choose(args.backend)
    except ValueError as exc:
        check(False, "", str(exc))
        return 1
    print(f"  backend: {cls.name} ({why})")
    _doctor_backend(cls, args, check)
    _doctor_folder(args)
    _doctor_quotas(args, check)
    _doctor_admission()
    print(
        "  previews: on a server that listens on localhost (the default), each at an origin "
        "of its own, <project>.localhost:<port> (Chromium and Firefox send it to this "
        "machine); reached from elsewhere or under JupyterHub, sandboxed under Jupyter's "
        "path; c.ReactBoxApp.preview_origin chooses (the Lab panel says which, and why)"
    )
    print("all good" if not problems else f"{len(problems)} problem(s) found")
    return 1 if problems else 0


def _doctor_backend(cls, args, check) -> None:
    """What the backend says of itself here (``Backend.doctor``), with the settings
    given on the command line."""
    import asyncio

    from traitlets.config import Config

    config = Config(
        {
            "DockerBackend": {"image": args.image, "runtime": args.runtime},
            "LocalBackend": {"sandbox": args.sandbox},
        }
    )
    backend = cls(config=config)

    async def ask() -> list:
        try:
            return await backend.doctor()
        finally:
            await backend.close()

    for finding in asyncio.run(ask()):
        if finding.ok is None:
            print(f"  WARN {finding.text}")
        else:
            check(finding.ok, finding.text, finding.text)
    if cls.name == "local":
        print("  (a Docker engine, when one answers, gives each preview a hardened container)")


def _doctor_folder(args) -> None:
    """Which server manages the projects folder, if one runs."""
    from pathlib import Path

    from .store import StoreLock

    folder = Path(args.projects_dir or _default_projects_dir())
    if not folder.is_dir():
        print(f"  projects: {folder} (none yet)")
        return
    manager = StoreLock(folder).manager()
    if manager is None:
        print(f"  projects: {folder} (no server manages them now)")
    else:
        where = manager.get("url") or f"pid {manager.get('pid')}"
        print(
            f"  projects: {folder}, managed by the server at {where} (pid {manager.get('pid')}); "
            "a second server of this folder relays to it"
        )


def _doctor_quotas(args, check) -> None:
    """How a project's disk and file quotas are kept (``disk_limits``)."""
    from . import boxes

    problem = boxes.problem()
    if args.disk_limits == "check":
        print("  WARN quotas: checked every 30 s (disk_limits = 'check')")
    elif problem is None:
        check(True, "quotas: kept by the kernel (a filesystem image per project)", "")
    elif args.disk_limits == "image":
        check(False, "", f"quotas: disk_limits is 'image', but {problem}")
    else:
        print(
            f"  WARN quotas: checked every 30 s, not kept by the kernel: {problem} "
            "(a project that writes fast fills that much more before it is stopped)"
        )


def _doctor_admission() -> None:
    """How many installs, starts and edits run at once here, and the memory a start
    waits for (from this host's cores and memory, unless configured)."""
    lines = admission.Admission()
    print(
        f"  at once: {lines.max_installs} installs, {lines.max_starts} starts, "
        f"{lines.max_edits} AI edits; up to {lines.max_queued} wait in each line (fairly "
        "across users), then 429 (c.Admission.max_installs, max_starts, max_edits, max_queued)"
    )
    memory = admission.meminfo()
    print(
        f"  memory: a start waits for {lines.start_memory or 'nothing'} available beyond a "
        f"reserve of {lines.memory_reserve} (this host has "
        f"{memory.get('MemAvailable', 0) >> 20} MiB available of "
        f"{memory.get('MemTotal', 0) >> 20} MiB; c.Admission.start_memory, memory_reserve)"
    )


def _default_projects_dir() -> str:
    import os

    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "reactbox", "projects")


def configurables() -> list[type]:
    """Every class an admin configures (``c.<Class>.<name>``), in the order people
    meet them."""
    from .ai.editor import AIEditor
    from .app import ReactBoxApp
    from .backends import BUILT_IN, Backend, backend_class
    from .builds import Builds
    from .hub.service import HubService
    from .runtime import Runtime
    from .shares import Shares

    backends = [backend_class(name) for name in BUILT_IN]
    return [
        *(ReactBoxApp, Runtime, admission.Admission, AIEditor, Builds, Shares, Backend),
        *backends,
        HubService,
    ]


def settings(args) -> int:
    if args.markdown:
        print(configuration_reference(), end="")
        return 0
    for cls in configurables():
        print(cls.class_config_section())
    return 0


def configuration_reference() -> str:
    """Every setting with its type, default and help, as a Markdown (MyST) page
    section: the docs' configuration reference."""
    out = []
    for cls in configurables():
        out.append(f"### `c.{cls.__name__}`\n")
        doc = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
        if doc:
            out.append(f"{doc}\n")
        for name, trait in sorted(cls.class_own_traits(config=True).items()):
            kind = type(trait).__name__
            default = trait.default_value_repr()
            out.append(f"`c.{cls.__name__}.{name}`\n: *{kind}*, default `{default}`.")
            help_text = " ".join((trait.help or "").split())
            out.append(f"  {help_text}\n")
    return "\n".join(out)


def hub_config(args) -> int:
    from .hub.config import fragment

    command = None
    if args.service_args:
        extra = args.service_args[1:] if args.service_args[0] == "--" else args.service_args
        command = [sys.executable, "-m", "jupyter_reactbox.hub.service", *extra]
    print(
        fragment(
            name=args.name, url=args.url, reach=args.reach, base_url=args.base_url, command=command
        )
    )
    return 0


def hub_service(argv: list[str]) -> int:
    from .hub.service import HubService

    HubService.launch_instance(argv)
    return 0


def mcp(args) -> int:
    from .mcp import stdio

    return stdio.run(args.url, args.token)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hub-service"]:  # its own traitlets command line
        return hub_service(argv[1:])
    parser = argparse.ArgumentParser(prog="jupyter reactbox", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-image", help="build the sandbox image")
    b.add_argument(
        "--offline",
        action="store_true",
        help="use no container registry: debootstrap + the host's Node.js",
    )
    b.add_argument("--tag", default=DEFAULT_TAG, help="image tag (default: %(default)s)")
    b.add_argument("--mirror", help="Debian mirror for --offline (default: the host's apt mirror)")
    b.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    b.set_defaults(func=build_image)
    d = sub.add_parser("doctor", help="say what is missing for previews to run")
    d.add_argument("--image", default=DEFAULT_TAG, help="image tag (default: %(default)s)")
    d.add_argument("--runtime", default="", help="OCI runtime to check for, e.g. runsc")
    d.add_argument(
        "--backend", default="auto", help="backend to check: auto, docker, local (default: auto)"
    )
    d.add_argument(
        "--sandbox",
        default="auto",
        choices=["auto", "required", "off"],
        help="the local backend's sandbox setting to check (default: auto)",
    )
    d.add_argument(
        "--disk-limits",
        default="auto",
        choices=["auto", "image", "check"],
        help="the disk_limits setting to check (default: auto)",
    )
    d.add_argument(
        "--projects-dir",
        default="",
        help="the projects folder to look at (default: the one a server uses by default)",
    )
    d.set_defaults(func=doctor)
    s = sub.add_parser("settings", help="print every setting as a commented config file")
    s.add_argument(
        "--markdown", action="store_true", help="as the docs' configuration reference (MyST)"
    )
    s.set_defaults(func=settings)
    h = sub.add_parser(
        "hub-config", help="print the jupyterhub_config.py fragment for the hub service"
    )
    h.add_argument("--name", default="reactbox", help="service name (default: %(default)s)")
    h.add_argument(
        "--url", default="http://127.0.0.1:10101", help="where it listens (default: %(default)s)"
    )
    h.add_argument(
        "--reach",
        default="",
        help="where user servers reach it, if not at --url (from containers or pods)",
    )
    h.add_argument("--base-url", default="/", help="the hub's base URL (default: %(default)s)")
    h.add_argument(
        "service_args",
        nargs=argparse.REMAINDER,
        help="after --: arguments of the service, e.g. --HubService.data_dir=/srv/reactbox",
    )
    h.set_defaults(func=hub_config)
    sub.add_parser("hub-service", help="run the hub service (JupyterHub starts it)")
    m = sub.add_parser("mcp", help="serve your projects to an agent as MCP tools, over stdio")
    m.add_argument(
        "--url",
        default="",
        help="the Jupyter server, e.g. http://127.0.0.1:8888/ (default: found as a kernel "
        "finds it)",
    )
    m.add_argument(
        "--token", default="", help="its token (default: $JUPYTER_REACTBOX_TOKEN, or found)"
    )
    m.set_defaults(func=mcp)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
