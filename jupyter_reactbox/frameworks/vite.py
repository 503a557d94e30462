"""Vite: the app's own Vite and config, through our launcher (``support/vite-serve.mjs``),
which adds the plugin that gives client routers the preview's base."""

from __future__ import annotations

import secrets

from tornado import httpclient

from .base import COMPILED_SUFFIXES, Framework


class Vite(Framework):
    async def compile_errors(self, root: str, paths: list[str]) -> str | None:
        """Vite compiles a module when it is requested; a query it has not seen
        makes it compile the file as it is on disk now, not from its cache."""
        client = httpclient.AsyncHTTPClient()
        nonce = secrets.token_hex(4)
        for path in paths:
            if not path.endswith(COMPILED_SUFFIXES):
                continue
            url = f"{root}{path}?reactbox-check={nonce}"
            response = await client.fetch(url, raise_error=False, request_timeout=60)
            if response.code >= 400:
                text = (response.body or b"").decode("utf-8", "replace").strip()
                return f"{path}: {text[:2000] or f'HTTP {response.code}'}"
        return None


FRAMEWORK = Vite(
    name="vite",
    packages=("vite",),
    order=20,
    dev_argv=(
        *("node", "{support}/vite-serve.mjs"),
        *("--host", "{host}", "--port", "{port}", "--base", "{base}"),
    ),
    # No browser to open in a sandbox: `server.open` in an app's config would crash
    # the dev server on a missing xdg-open (the launcher also turns it off).
    env=(("BROWSER", "none"),),
    build_argv=("node", "{support}/vite-build.mjs", "--base", "{base}", "--out", "{out}"),
    entry_files=("src/App.jsx", "src/App.tsx", "src/App.js", "src/App.ts"),
)
