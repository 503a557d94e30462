"""What a running preview looks like, to the AI editor: the dev server's compile
errors, one load of its page in the shut-in headless browser (``headless.py``),
and a screenshot.  A frozen preview is thawed first; one look at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import headless, probes
from .ai import vision

if TYPE_CHECKING:
    from .runtime import Runtime


class Views:
    """The looks at one runtime's previews."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self._shooting = asyncio.Semaphore(1)
        self.browser: Callable[[], str | None] = headless.find_browser
        """The headless browser for the API's looks (the AI editor's, where it has one)."""
        self.via: Callable[[], str | None] = lambda: None
        """The server whose preview proxy a look goes through (``screenshot``'s ``via``)."""

    async def compile_errors(self, project_id: str, paths: list[str]) -> str | None:
        """The running dev server's first error compiling ``paths``, or None."""
        await self.rt.thaw(project_id)
        await self.rt.changed(project_id)
        return await probes.compile_errors(self.rt.previews.get(project_id), paths)

    async def screenshot(
        self, project_id: str, browser: str, via: str | None = None
    ) -> vision.Image:
        """A picture of the running preview, taken by the shut-in headless ``browser``
        (``headless.py``), one at a time: through the preview proxy of the server at
        ``via`` (``http://127.0.0.1:PORT``), which must serve previews on their token
        alone, else straight from the dev server."""
        url = await self._url(project_id, via, vision.ScreenshotError)
        async with self._shooting:
            return await vision.screenshot(browser, url)

    async def load_page(
        self, project_id: str, browser: str, via: str | None = None
    ) -> headless.Loaded:
        """One load of the running preview in the shut-in headless ``browser``, as
        ``screenshot`` takes it: what the page threw, and whether it is blank."""
        url = await self._url(project_id, via, headless.BrowserError)
        async with self._shooting:
            return await headless.load(browser, url)

    async def check(self, project_id: str, paths: list[str]) -> dict:
        """For the API (an agent's look): the dev server's error compiling ``paths``,
        one headless load of the page where the server has a browser (else None),
        and what the open pages reported."""
        compile_error = await self.compile_errors(project_id, paths) if paths else None
        page = None
        browser = self.browser()
        if browser and compile_error is None:
            loaded = await self.load_page(project_id, browser, self.via())
            page = {"errors": loaded.errors, "blank": loaded.blank}
        return {
            "compile_error": compile_error,
            "page": page,
            "page_errors": self.rt.page_errors(project_id),
        }

    async def picture(self, project_id: str) -> vision.Image:
        """A screenshot for the API, with the server's browser (ScreenshotError if none)."""
        browser = self.browser()
        if not browser:
            raise vision.ScreenshotError("this server has no headless browser")
        return await self.screenshot(project_id, browser, self.via())

    async def _url(self, project_id: str, via: str | None, error: type[Exception]) -> str:
        await self.rt.thaw(project_id)
        st = self.rt.previews.get(project_id)
        if st is None or st.status != "running" or not st.endpoint:
            raise error("the preview is not running (start it, then ask again)")
        # Through the proxy, the page is the one the user sees: the sandbox's header,
        # bodies rewritten for the base (a dev server's own asset URLs may miss it).
        path = self.rt.previews.url(project_id)
        url = via + path if via and path and path.startswith("/") else None
        return url or probes.root_url(st)
