"""Next.js (pages and app router, 13 to 16).

A preload (``support/next-preload.cjs``, through NODE_OPTIONS) makes the
preview's base Next's default basePath, so the app's own next.config still
applies and no file of the app changes.
"""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import quote, unquote

from tornado import httpclient

from .base import COMPILED_SUFFIXES, Framework

COMPILE_PROBES = (0.3, 0.7)
"""Seconds before each round of page requests of the compile check: Next's file
watcher may not have seen a change at the first."""
_ROUTE_FILE = re.compile(
    r"^(?:src/)?(?P<router>app|pages)/(?P<route>.*?)(?:/?(?P<leaf>page|index))?\.(?:[jt]sx?|mdx)$"
)
_NEXT_DATA = re.compile(
    r'<script id="__NEXT_DATA__" type="application/json">(.*?)</script>', re.DOTALL
)


def routes(paths: list[str]) -> list[str]:
    """The routes (relative to the base) whose pages Next.js must render to compile
    ``paths``: a page's own route, else the root page (which compiles the layout
    and what it imports).  Next compiles a page when it is requested."""
    found = []
    for path in paths:
        route = ""
        match = _ROUTE_FILE.match(path)
        if match and (match["router"] == "pages" or match["leaf"] == "page"):
            segments = [s for s in match["route"].split("/") if s and not s.startswith(("(", "@"))]
            if all(not s.startswith(("[", "_")) for s in segments) and segments[:1] != ["api"]:
                route = "/".join(segments)
        if route not in found:
            found.append(route)
    return found[:3]


def error_of(body: bytes) -> str | None:
    """What Next.js's development error page says went wrong (its ``__NEXT_DATA__``
    carries the compile or render error), or None."""
    match = _NEXT_DATA.search(body.decode("utf-8", "replace"))
    try:
        data = json.loads(match[1]) if match else None
    except ValueError:
        return None
    err = data.get("err") if isinstance(data, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    return message if isinstance(message, str) and message else None


class Next(Framework):
    def upstream_query(self, path: str, query: str, base: str) -> str:
        """``next/image`` names a public file from the root (``url=/dot.png``), and
        Next's optimizer looks for it there; under a basePath (ours, which the app
        does not know) it is at the base."""
        if path.lstrip("/") != "_next/image":
            return query
        parts = query.split("&")
        for i, part in enumerate(parts):
            name, _, value = part.partition("=")
            url = unquote(value)
            if name == "url" and url.startswith("/") and not url.startswith(("//", base)):
                parts[i] = "url=" + quote(base.rstrip("/") + url, safe="")
        return "&".join(parts)

    async def compile_errors(self, root: str, paths: list[str]) -> str | None:
        compiled = [p for p in paths if p.endswith(COMPILED_SUFFIXES)]
        if not compiled:
            return None
        client = httpclient.AsyncHTTPClient()
        for delay in COMPILE_PROBES:
            await asyncio.sleep(delay)
            for route in routes(compiled):
                response = await client.fetch(root + route, raise_error=False, request_timeout=120)
                if response.code >= 500:
                    return (error_of(response.body or b"") or f"HTTP {response.code}")[:2000]
        return None


FRAMEWORK = Next(
    name="next",
    packages=("next",),
    order=40,
    dev_argv=(
        "node",
        "node_modules/next/dist/bin/next",
        "dev",
        "--port",
        "{port}",
        "--hostname",
        "{host}",
    ),
    env=(
        ("NODE_OPTIONS", "--require {support}/next-preload.cjs"),
        ("REACTBOX_BASE", "{base}"),
        ("NEXT_TELEMETRY_DISABLED", "1"),
        ("BROWSER", "none"),
    ),
    # Next redirects `<base>/` to `<base>`.
    root_without_slash=True,
    # Next 15+ refuses cross-site requests for its dev resources (Origin and
    # Sec-Fetch-Site); the sandboxed page is cross-site to everyone (Origin: null).
    cross_site_checked=True,
    # Its dev overlay's fonts, named from the root in its CSS.
    root_paths=("/__nextjs_font/",),
    # A static export (next-build.cjs), where the app allows one.
    build_argv=("node", "{support}/next-build.cjs", "{out}"),
    build_env=(
        ("NODE_OPTIONS", "--require {support}/next-preload.cjs"),
        ("REACTBOX_BASE", "{base}"),
        ("REACTBOX_EXPORT", "1"),
        ("NEXT_TELEMETRY_DISABLED", "1"),
    ),
    entry_files=(
        *("app/page.tsx", "app/page.jsx", "app/page.js", "src/app/page.tsx"),
        *("pages/index.tsx", "pages/index.jsx", "pages/index.js"),
    ),
)
