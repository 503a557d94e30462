"""Showing the model the page: a screenshot of the preview, and images the user
attaches (a sketch, a mock-up), sent as image content parts of the
OpenAI-compatible chat API when the model takes images (``ai_vision``).

Attached images arrive as data URLs (``data:image/png;base64,...``): PNG,
JPEG, GIF or WebP by their first bytes, whatever the URL claims, at most
``MAX_IMAGES`` of ``MAX_IMAGE_BYTES`` each.

The screenshot is taken by a headless Chromium on the server (the engine the
tests drive), through this server's preview proxy (``Runtime.screenshot``).
The page is the app's code, so the browser is shut in: a fresh profile in a
temporary folder, no cookies, and every request but those to the address it
loads the page from sent to a proxy that does not exist (loopback included), so
the page can reach neither this host's other services nor anything else; no
UDP for WebRTC; killed after ``timeout`` seconds.  The picture goes to the
model only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UserError

MAX_IMAGES = 4
MAX_IMAGE_BYTES = 5 << 20
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}
_DATA_URL = re.compile(r"data:([\w.+/-]*)(?:;[\w=.+-]+)*;base64,", re.ASCII)


class ImageError(UserError):
    status = 400


class ImageTooLarge(ImageError):
    status = 413


class ScreenshotError(Exception):
    """No screenshot could be taken; the message says why (the edit goes on without)."""


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


def find_browser(configured: str = "") -> str | None:
    """The browser for screenshots: the configured one, else the first on PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def browser_args(url: str, out: Path, profile: Path, *, width: int, height: int) -> list[str]:
    """Headless Chromium taking one screenshot of ``url``, able to reach only its host."""
    netloc = urlsplit(url).netloc
    args = [
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-extensions",
        "--mute-audio",
        f"--user-data-dir={profile}",
        # Everything goes to a proxy that is not there, loopback too (<-loopback>),
        # except the address the page is loaded from.
        "--proxy-server=http://127.0.0.1:9",
        f"--proxy-bypass-list=<-loopback>;{netloc}",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        f"--window-size={width},{height}",
        "--virtual-time-budget=5000",
        f"--screenshot={out}",
        url,
    ]
    if os.geteuid() == 0:  # Chromium's own sandbox refuses root
        args.insert(0, "--no-sandbox")
    return args


async def screenshot(
    browser: str, url: str, *, width: int = 1280, height: int = 800, timeout: float = 30
) -> Image:
    """A PNG of the page at ``url`` as the browser renders it."""
    with tempfile.TemporaryDirectory(prefix="reactbox-shot-") as tmp:
        out = Path(tmp) / "page.png"
        args = browser_args(url, out, Path(tmp) / "profile", width=width, height=height)
        proc = await asyncio.create_subprocess_exec(
            browser,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ScreenshotError(f"the browser took longer than {timeout:.0f} s") from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its helpers, if any outlived it
        data = out.read_bytes() if out.exists() else b""
        if sniff(data) != "image/png":
            last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise ScreenshotError(
                f"the browser made no picture (exit {proc.returncode}: {last[0]})"
            )
        return Image("image/png", data)
