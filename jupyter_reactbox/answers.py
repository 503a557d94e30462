"""Our exceptions as HTTP answers, in one place for every handler.

A handler raises an error of ``errors.py`` and never builds an HTTP error of its
own.  Tornado hands whatever a request raised to ``log_exception`` and then to
``write_error``; :class:`Answers` turns ours into the status and message they
carry: JSON for the REST API (``api.py``, the hub service's admin API and the
relay of it), plain text on preview paths (``proxy.py``, ``hub/relay.py``).  An
OSError of a full disk is answered as ``DiskFull``; anything else is a 500 whose
traceback goes to the log and not to the caller.
"""

from __future__ import annotations

import json
from pathlib import Path

from tornado import httputil, web
from tornado.log import app_log, gen_log

from .errors import Busy, DiskFull, ReactBoxError, is_disk_full


class Answers:
    """Mixed in before a tornado ``RequestHandler`` (or one of Jupyter's)."""

    def disk_root(self) -> Path | None:
        """The projects folder this request writes under, to tell a full disk from a
        full project (``DiskFull.at``); None where there is none."""
        return None

    def known_error(self, exc: BaseException | None) -> ReactBoxError | None:
        """``exc`` as one of ours, or None for an error nobody planned for."""
        if isinstance(exc, ReactBoxError):
            return exc
        if exc is not None and is_disk_full(exc):
            root = self.disk_root()
            return DiskFull.at(root) if root is not None else DiskFull()
        return None

    def log_exception(self, typ, value, tb):
        known = self.known_error(value)
        if known is None:
            return super().log_exception(typ, value, tb)  # type: ignore[misc]
        request = self.request  # type: ignore[attr-defined]
        if known.status == 500:  # ours, but not planned for: where it came from helps
            app_log.error(
                "%s %s: %s", request.method, request.uri, known, exc_info=(typ, value, tb)
            )
        else:
            gen_log.warning("%d %s %s: %s", known.status, request.method, request.uri, known)

    def answer(self, status_code: int, kwargs: dict) -> tuple[int, str | None]:
        """(status, message) for ``write_error``: an error of ours gets its own status
        (and a full line its ``Retry-After``), an HTTPError its formatted message, and
        anything else no message (the handler's default page)."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        exc = kwargs.get("exc_info", (None, None, None))[1]
        known = self.known_error(exc)
        if known is not None:
            handler.set_status(known.status)
            if isinstance(known, Busy):
                handler.set_header("Retry-After", str(known.retry_after))
            return known.status, str(known)
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
            return status_code, message
        return status_code, None

    def write_json_error(self, status_code: int, **kwargs) -> bool:
        """Answer as Jupyter's API does (``{"message", "reason"}``); False where there
        is no message to give (the caller's default)."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        _, message = self.answer(status_code, kwargs)
        if message is None:
            return False
        handler.set_header("Content-Type", "application/json")
        handler.finish(json.dumps({"message": message, "reason": None}))
        return True

    def write_plain_error(self, status_code: int, **kwargs) -> None:
        """A short plain-text error: no Jupyter page, template or cookie on a preview
        path, and a policy that runs nothing."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        status, message = self.answer(status_code, kwargs)
        retry_after = handler._headers.get("Retry-After")
        handler._headers = httputil.HTTPHeaders()  # none of the page's or Jupyter's
        if retry_after:
            handler.set_header("Retry-After", retry_after)
        handler.set_header("Content-Type", "text/plain; charset=utf-8")
        handler.set_header("X-Content-Type-Options", "nosniff")
        handler.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
        handler.finish(f"{status} {handler._reason}: {message or handler._reason}\n")


class JsonAnswers(Answers):
    """Answers as Jupyter's API does: our errors as ``{"message", "reason"}``, any
    other as the handler's own default."""

    def write_error(self, status_code, **kwargs):
        if not self.write_json_error(status_code, **kwargs):
            super().write_error(status_code, **kwargs)  # type: ignore[misc]
