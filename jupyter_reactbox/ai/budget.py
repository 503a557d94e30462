"""Tokens one user's AI edits spend per day (UTC), against the cap an admin sets
(``c.AIEditor.daily_tokens``).

The count lives in a small JSON file beside the user's projects, written by the
server after every answer, so a restart does not hand out a new day's worth.
Under JupyterHub that file is the hub service's, which holds the model key:
users cannot reset it.  An edit is refused (429) once the day's tokens are
spent; one that runs out between tries stops there and is rolled back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path

from ..errors import (
    OverBudget,
)

log = logging.getLogger(__name__)


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


class TokenBudget:
    """One user's tokens of today, at ``path``; ``daily`` 0: no cap (still counted)."""

    def __init__(self, path: Path, daily: int = 0):
        self.path = Path(path)
        self.daily = daily
        self._lock = threading.Lock()
        self._counted = ("", 0)
        """(day, tokens) as this process counted them: the floor when the file
        cannot be written (a full disk must neither fail an edit nor lift the cap)."""

    def _read(self) -> int:
        day, counted = self._counted
        counted = counted if day == _today() else 0
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return counted
        if not isinstance(data, dict) or data.get("day") != _today():
            return counted
        spent = data.get("tokens")
        return max(spent if isinstance(spent, int) and spent >= 0 else 0, counted)

    def spent(self) -> int:
        """Tokens used today."""
        with self._lock:
            return self._read()

    def left(self) -> int | None:
        """Tokens left today; None without a cap."""
        return None if self.daily <= 0 else max(self.daily - self.spent(), 0)

    def check(self) -> None:
        """Raise OverBudget (429) when today's tokens are spent."""
        if self.left() == 0:
            raise OverBudget(self.why())

    def why(self) -> str:
        tomorrow = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
        return (
            f"You have used {self.spent():,} of your {self.daily:,} AI tokens for today "
            f"(c.AIEditor.daily_tokens); edits work again from {tomorrow} 00:00 UTC."
        )

    def spend(self, tokens: int) -> None:
        """Count ``tokens`` as used today (written at once, atomically)."""
        if tokens <= 0:
            return
        with self._lock:
            total = self._read() + tokens
            self._counted = (_today(), total)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps({"day": _today(), "tokens": total}))
                os.replace(partial, self.path)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                log.warning("Could not keep the AI token count in %s: %s", self.path, exc)

    def to_json(self) -> dict:
        return {"spent_today": self.spent(), "daily_limit": self.daily or None}
