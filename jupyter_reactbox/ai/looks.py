"""What an AI edit shows the model besides text, and what it checks of the page.

The model may be shown the preview as it is (a screenshot, in the shut-in
headless browser) and images the user attached, where the admin says it takes
images (``c.AIEditor.vision``).  After a change compiles, a page open in the
preview is watched for a new error for a few seconds; with none open, the page
is loaded once in the headless browser, and what it throws is blamed on the
change when it names a changed file or leaves the page blank.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import headless
from .vision import Image, ScreenshotError

if TYPE_CHECKING:
    from ..store import Project
    from .editor import EditResult, LoadPage, PageWatch, Progress, Screenshot


class Looks:
    """The pictures and page checks of one editor's edits."""

    def __init__(
        self,
        *,
        vision: bool,
        page_check_seconds: float,
        browser: Callable[[], str | None],
        pages: PageWatch | None,
        screenshot: Screenshot | None,
        load_page: LoadPage | None,
        log: Any,
    ):
        self.vision = vision
        self.page_check_seconds = page_check_seconds
        self.browser = browser
        self.pages = pages
        self.screenshot = screenshot
        self.load_page = load_page
        self.log = log

    async def pictures(
        self,
        project: Project,
        result: EditResult,
        progress: Progress,
        images: list[Image] | None,
        screenshot: bool,
    ) -> list[tuple[str, Image]]:
        """What the model is shown besides the text: (caption, image) pairs."""
        images = images or []
        if not (images or screenshot):
            return []
        if not self.vision:
            what = " and ".join(
                ([f"{len(images)} attached image{'s' * (len(images) > 1)}"] if images else [])
                + (["the screenshot"] if screenshot else [])
            )
            result.notes.append(
                f"Not sent: {what}. This model is not set up to take images "
                "(an admin sets c.AIEditor.vision)."
            )
            return []
        pictures = []
        if screenshot:
            try:
                browser = self.browser()
                if self.screenshot is None:
                    raise ScreenshotError("this server cannot take screenshots")
                if browser is None:
                    raise ScreenshotError(
                        "there is no browser for screenshots on the server (install "
                        "chromium, or set c.AIEditor.screenshot_browser)"
                    )
                progress.emit(stage="looking")
                shot = await self.screenshot(project.id, browser)
                pictures.append(("The app's page in the preview as it is now:", shot))
            except ScreenshotError as exc:
                result.notes.append(f"No screenshot was sent: {exc}.")
        for n, image in enumerate(images, 1):
            pictures.append((f"Image {n} of {len(images)}, attached by the user:", image))
        result.images = len(pictures)
        return pictures

    async def page_error(
        self,
        project_id: str,
        known: set,
        since: float,
        progress: Progress,
        attempt: int,
        paths: list[str],
    ) -> dict | None:
        """A new error a page of the preview reports within ``page_check_seconds`` seconds
        of the change (of its reload, if it reloaded); when no page is open, one
        that a load in the headless browser throws which names a changed file
        (``paths``), or any it throws while the page stays blank; else None."""
        if self.pages is None or self.page_check_seconds <= 0:
            return None
        if self.pages.watched(project_id):
            progress.emit(stage="checking", attempt=attempt)
            return await self.pages.new_error(project_id, known, since, self.page_check_seconds)
        browser = self.browser()
        if self.load_page is None or browser is None or not self.pages.running(project_id):
            return None
        progress.emit(stage="checking", attempt=attempt, headless=True)
        try:
            loaded = await self.load_page(project_id, browser)
        except headless.BrowserError as exc:
            self.log.info("No headless check of the page of %s: %s", project_id, exc)
            return None
        for report in loaded.errors:
            if self.pages.error_key(report) in known:
                continue
            where = report.get("source", "") + "\n" + report.get("stack", "")
            if loaded.blank or any(f"/{path}" in where for path in paths):
                return {**report, "time": time.time()}
        return None
