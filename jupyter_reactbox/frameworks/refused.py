"""Frameworks that render pages on their own server, matching every route from the
origin's root: they run where a preview has an origin of its own (``root_only``:
why not under a path prefix, said in path mode), or not at all (``refused``).
jupyter-reactbox does not change an app's files to run it."""

from __future__ import annotations

from .base import Framework
from .vite import Vite

_OWN_ORIGIN = (
    " With previews at an origin of their own (c.ReactBoxApp.preview_origin = "
    "'separate', the default on a server that listens on localhost, or "
    "c.ReactBoxApp.preview_origin_template) it runs as it is."
)

REACT_ROUTER = Vite(
    name="react-router",
    packages=("@react-router/dev", "@remix-run/dev"),
    order=10,  # before Vite, which these apps also depend on
    # Its dev server is Vite's, with the app's config and its framework plugin:
    # the same launcher, at the root of the preview's own origin.
    dev_argv=(
        *("node", "{support}/vite-serve.mjs"),
        *("--host", "{host}", "--port", "{port}", "--base", "{base}"),
    ),
    env=(("BROWSER", "none"),),
    entry_files=("app/routes/home.tsx", "app/root.tsx", "app/routes/_index.tsx", "app/root.jsx"),
    root_only=(
        "This app uses {package} (React Router's framework mode, or Remix), which "
        "matches every route on its own server against `basename` in its config. Behind "
        "the preview's path that needs the preview's base there, and jupyter-reactbox does "
        "not change an app's files to run it, so each page would be its 404." + _OWN_ORIGIN
    ),
)

ASTRO = Framework(
    name="astro",
    packages=("astro",),
    order=50,
    dev_argv=("node", "{support}/astro-dev.mjs", "--host", "{host}", "--port", "{port}"),
    env=(("BROWSER", "none"), ("ASTRO_TELEMETRY_DISABLED", "1")),
    # Its Vite answers only its own host names: the proxy presents requests as
    # addressed to the dev server.
    cross_site_checked=True,
    entry_files=("src/pages/index.astro", "src/components/Counter.jsx"),
    root_only=(
        "This is an Astro site: Astro renders its pages on its own server, which would "
        "need the preview's base in astro.config (`base`) to match any route behind the "
        "preview's path, and jupyter-reactbox does not change an app's files to run it."
        + _OWN_ORIGIN
    ),
)

GATSBY = Framework(
    name="gatsby",
    packages=("gatsby",),
    order=50,
    refused=(
        "This is a Gatsby site. `gatsby develop` builds its GraphQL data layer and "
        "bundles with its own webpack before it serves a page (minutes and gigabytes "
        "for most sites, with plugins that fetch from the network at build time), which "
        "a preview's sandbox does not allow; Gatsby is no longer developed. Its React "
        "pages run as a Vite app (npm create vite@latest -- --template react)."
    ),
)
