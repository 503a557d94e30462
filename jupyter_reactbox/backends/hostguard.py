"""Only the server that runs the dev servers may connect to them from the host.

A container on a Docker bridge network, internal or not, is reachable from
the host at its address, by every process of every user.  On a machine shared
by several users (a JupyterHub with the service), one user could then open
another's dev server directly, bypassing the proxy and its token.  So, where
this server runs as root, each dev-server network gets one firewall rule:
connections from this host to its subnet are refused unless they come from
this server's own user.  The rule carries a comment naming the network, so it
can be found and removed with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)


def available() -> bool:
    """Only root can change the firewall; a server of one user has no one to keep out."""
    return os.geteuid() == 0 and shutil.which("iptables") is not None


def _rule(subnet: str, network: str) -> list[str]:
    return [
        "OUTPUT",
        "-d",
        subnet,
        "-m",
        "owner",
        "!",
        "--uid-owner",
        str(os.geteuid()),
        "-m",
        "comment",
        "--comment",
        f"jupyter-reactbox {network}",
        "-j",
        "REJECT",
    ]


def _iptables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=30)


def guard(subnet: str, network: str) -> None:
    """Refuse connections to ``subnet`` from every other user of this host (once)."""
    rule = _rule(subnet, network)
    if _iptables("-C", *rule).returncode == 0:
        return
    done = _iptables("-I", *rule)
    if done.returncode != 0:
        raise OSError(f"iptables could not guard {network} ({subnet}): {done.stderr.strip()}")
    log.info("Only uid %d may connect to %s (%s) from this host", os.geteuid(), network, subnet)


def unguard(subnet: str, network: str) -> None:
    while _iptables("-D", *_rule(subnet, network)).returncode == 0:
        pass
