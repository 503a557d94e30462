"""Showing the model the page: a screenshot of the preview, and images the user
attaches (a sketch, a mock-up), sent as image content parts of the
OpenAI-compatible chat API when the model takes images (``c.AIEditor.vision``).

Attached images arrive as data URLs (``data:image/png;base64,...``): PNG,
JPEG, GIF or WebP by their first bytes, whatever the URL claims, at most
``MAX_IMAGES`` of ``MAX_IMAGE_BYTES`` each.

The screenshot is taken by the server's shut-in headless Chromium
(``headless.py``), through this server's preview proxy (``Views.screenshot``).
The picture goes to the model only.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .. import headless
from ..errors import ImageError, ImageTooLarge, ScreenshotError
from ..headless import find_browser

__all__ = ["Image", "ImageError", "ScreenshotError", "find_browser", "parse_images", "screenshot"]

MAX_IMAGES = 4
MAX_IMAGE_BYTES = 5 << 20
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}
_DATA_URL = re.compile(r"data:([\w.+/-]*)(?:;[\w=.+-]+)*;base64,", re.ASCII)


@dataclass(frozen=True)
class Image:
    mime: str
    data: bytes

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"

    def part(self) -> dict:
        """The image as a content part of a chat message."""
        return {"type": "image_url", "image_url": {"url": self.data_url()}}


def sniff(data: bytes) -> str | None:
    """The image type by its first bytes, or None."""
    for magic, mime in _MAGIC.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_images(value: object) -> list[Image]:
    """An API body's ``images``: a list of base64 data URLs of images."""
    if value is None:
        return []
    usage = 'Attach images as "images": ["data:image/png;base64,..."] (PNG, JPEG, GIF, WebP).'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(usage)
    if len(value) > MAX_IMAGES:
        raise ImageError(f"At most {MAX_IMAGES} images go with one edit; {len(value)} came.")
    images = []
    for n, text in enumerate(value, 1):
        match = _DATA_URL.match(text)
        if not match:
            raise ImageError(f"Image {n} is not a base64 data URL. {usage}")
        if (len(text) - match.end()) * 3 // 4 > MAX_IMAGE_BYTES:
            raise ImageTooLarge(
                f"Image {n} is larger than {MAX_IMAGE_BYTES >> 20} MiB; send a smaller one."
            )
        try:
            data = base64.b64decode(text[match.end() :], validate=True)
        except (binascii.Error, ValueError):
            raise ImageError(f"Image {n} is not valid base64. {usage}") from None
        mime = sniff(data)
        if mime is None:
            raise ImageError(f"Image {n} is not a PNG, JPEG, GIF or WebP image. {usage}")
        images.append(Image(mime, data))
    return images


async def screenshot(
    browser: str, url: str, *, width: int = 1280, height: int = 800, timeout: float = 30
) -> Image:
    """A PNG of the page at ``url`` as the shut-in headless browser renders it."""
    try:
        loaded = await headless.load(
            browser, url, screenshot=True, width=width, height=height, timeout=timeout
        )
    except headless.BrowserError as exc:
        raise ScreenshotError(str(exc)) from None
    if loaded.png is None or sniff(loaded.png) != "image/png":
        raise ScreenshotError("the browser made no picture")
    return Image("image/png", loaded.png)
