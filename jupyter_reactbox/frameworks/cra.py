"""create-react-app (react-scripts 2 to 5), through ``support/cra-start.cjs``: it
gives older releases what they need (OpenSSL's legacy provider, the base as
their public path, their socket's path)."""

from __future__ import annotations

from types import MappingProxyType

from .base import Framework

FRAMEWORK = Framework(
    name="cra",
    packages=("react-scripts",),
    order=30,
    dev_argv=("node", "{support}/cra-start.cjs"),
    env=(
        ("HOST", "{host}"),
        ("PORT", "{port}"),
        ("BROWSER", "none"),
        ("PUBLIC_URL", "{base}"),
        ("WDS_SOCKET_PATH", "{base}ws"),
        ("WDS_SOCKET_PORT", "0"),  # 0: the page's own port, i.e. the proxy's
        # Only the preview proxy can reach the dev server, and it sends the
        # dev server's own address as Host.
        ("DANGEROUSLY_DISABLE_HOST_CHECK", "true"),
        ("FAST_REFRESH", "true"),
    ),
    # WDS_SOCKET_PATH only tells the page where to connect; webpack-dev-server
    # itself keeps listening on /ws.
    upstream_paths=MappingProxyType({"ws": "/ws"}),
    build_argv=("node", "{support}/cra-build.cjs"),
    build_env=(
        ("PUBLIC_URL", "{base}"),
        ("BUILD_PATH", "{out}"),
        ("GENERATE_SOURCEMAP", "false"),
        # The app's lint rules are its own business, not the build's.
        ("DISABLE_ESLINT_PLUGIN", "true"),
    ),
    entry_files=("src/App.js", "src/App.jsx", "src/App.tsx", "src/App.ts"),
)
