"""Settings that were the app's and moved to the class that owns them.

``c.ReactBoxApp.<old>`` still configures ``c.<Section>.<new>``, with a warning
that names the new setting, unless the new one is set too (``MovedSettings``).
"""

from __future__ import annotations

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

MOVED_TO_DOCKER_BACKEND = {
    "image": "image",
    "docker_runtime": "runtime",
    "docker_pool_size": "pool_size",
    "sandbox_uid": "uid",
    "sandbox_gid": "gid",
    "memory_limit": "memory_limit",
    "cpu_limit": "cpu_limit",
    "pids_limit": "pids_limit",
    "tmp_size": "tmp_size",
    "install_memory_limit": "install_memory_limit",
    "extra_ca_certs": "extra_ca_certs",
}
MOVED_TO_RUNTIME = {
    name: name
    for name in (
        "start_timeout",
        "idle_timeout",
        "freeze_timeout",
        "max_running",
        "max_restarts",
        "preview_cache",
        "on_shutdown",
    )
}
MOVED_TO_BACKEND = {
    "npm_registry": "registry",
    "ignore_scripts": "ignore_scripts",
    "install_timeout": "install_timeout",
    "modules_cache_size": "modules_cache_size",
    "package_store_size": "package_store_size",
    "max_log_followers": "max_log_followers",
}
MOVED_TO_AI_EDITOR = {
    f"ai_{name}": name
    for name in (
        "base_url",
        "api_key",
        "model",
        "timeout",
        "max_retries",
        "max_tokens",
        "page_check_seconds",
        "page_check_headless",
        "daily_tokens",
        "max_attempts",
        "vision",
        "screenshot_browser",
        "context_chars",
        "max_answer_chars",
    )
}


MOVED_TO_ADMISSION = {
    name: name
    for name in (
        "max_installs",
        "max_starts",
        "max_edits",
        "max_queued",
        "start_memory",
        "memory_reserve",
    )
}

MOVED: dict[str, dict[str, str]] = {
    "Admission": MOVED_TO_ADMISSION,
    "DockerBackend": MOVED_TO_DOCKER_BACKEND,
    "Runtime": MOVED_TO_RUNTIME,
    "Backend": MOVED_TO_BACKEND,
    "AIEditor": MOVED_TO_AI_EDITOR,
}
"""Per section that owns them now: old name (c.ReactBoxApp's) -> new name."""


def _owner(section: str) -> type:
    from .admission import Admission
    from .ai.editor import AIEditor
    from .backends.base import Backend
    from .backends.docker import DockerBackend
    from .runtime import Runtime

    return {"DockerBackend": DockerBackend, "Runtime": Runtime, "Backend": Backend,
            "AIEditor": AIEditor, "Admission": Admission}[section]  # fmt: skip


def _stub(section: str, new: str):
    """A trait that reads the old name as the new one's kind of value."""
    trait = _owner(section).class_traits()[new]
    kind = next((k for k in (Bool, Int, Float) if isinstance(trait, k)), Unicode)
    return kind(help=f"Deprecated: use c.{section}.{new}.").tag(config=True)


class _Moved(LoggingConfigurable):
    def _moved_settings(self, section: str, *also: str) -> dict:
        """What c.ReactBoxApp's old names of ``section``'s settings set, with a warning
        for each, unless c.<section> (or a section of ``also``, its subclasses) sets
        the same."""
        settings = {}
        for old, new in MOVED[section].items():
            if old not in self.config.ReactBoxApp:
                continue
            self.log.warning("c.ReactBoxApp.%s is deprecated: use c.%s.%s", old, section, new)
            if not any(new in self.config[name] for name in (section, *also)):
                settings[new] = getattr(self, old)
        return settings


MovedSettings = type(
    "MovedSettings",
    (_Moved,),
    {
        "__doc__": "The app's old names of settings that moved (``MOVED``), still read.",
        **{
            old: _stub(section, new)
            for section, moved in MOVED.items()
            for old, new in moved.items()
        },
    },
)
