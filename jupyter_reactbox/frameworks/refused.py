"""Frameworks recognised but not run under a path prefix, each with why and what
to do instead.  jupyter-reactbox does not change an app's files to run it."""

from __future__ import annotations

from .base import Framework

REACT_ROUTER = Framework(
    name="react-router",
    packages=("@react-router/dev", "@remix-run/dev"),
    order=10,  # before Vite, which these apps also depend on
    refused=(
        "This app uses {package} (React Router's framework mode, or Remix), which "
        "matches every route on its own server against `basename` in its config. Behind "
        "the preview's path that needs the preview's base there, and jupyter-reactbox does "
        "not change an app's files to run it, so each page would be its 404. React "
        "Router in library mode (BrowserRouter, createBrowserRouter in a Vite app) runs "
        "as it is."
    ),
)

ASTRO = Framework(
    name="astro",
    packages=("astro",),
    order=50,
    refused=(
        "This is an Astro site. jupyter-reactbox runs React apps built with Vite, "
        "create-react-app or Next.js; Astro renders its pages on its own server, which "
        "would need the preview's base in astro.config (`base`) to match any route, and "
        "jupyter-reactbox does not change an app's files to run it. To preview its React "
        "components here, put them in a Vite app (npm create vite@latest -- --template react)."
    ),
)
