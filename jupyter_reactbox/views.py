"""What a running preview looks like, to the AI editor: the dev server's compile
errors, one load of its page in the shut-in headless browser (``headless.py``),
and a screenshot.  A frozen preview is thawed first; one look at a time."""

from __future__ import annotations

import asyncio
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
