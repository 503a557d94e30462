"""Showing the model the page: a screenshot of the running preview taken by the
server's headless Chromium, and images the user attaches, reach the scripted
OpenAI-compatible endpoint as image content parts through the real openai
client; without a model that takes images nothing is sent and the edit says so;
bad images are refused before the model is asked.  (That the screenshot browser
reaches nothing but the dev server is an attack test: ``test_attacks.py``.)"""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from conftest import ARTIFACTS, FIXTURES, zip_dir
from test_edits import HEADING, app_jsx, assert_intact, block
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import history


@pytest.fixture
def editor_config():
    return {"vision": True}


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour, made here (a user's sketch, as far as the server knows)."""
    row = b"\x00" + bytes(rgb) * width
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(row * height)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, RGB pixels) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    at, idat, width, height, channels = 8, b"", 0, 0, 3
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at : at + 4]), data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    raw, stride, previous, out = zlib.decompress(idat), width * channels, None, []
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        up = previous or bytearray(stride)
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = up[i], up[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += [tuple(line[i : i + 3]) for i in range(0, stride, channels)]
        previous = line
    return width, height, out


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


async def post(jp_fetch, body: dict) -> dict:
    r = await jp_fetch(
        "reactbox", "api", "projects", "shop", "edits", method="POST", body=json.dumps(body)
    )
    return json.loads(r.body)


@pytest.mark.docker
async def test_a_screenshot_and_an_attached_image_reach_the_model_as_image_parts(
    api, jp_fetch, llm
):
    await api.upload_running()
    sketch = png(40, 30, (255, 0, 0))
    llm.answer(block("src/App.jsx", HEADING, HEADING.replace("Get started", "Pick a plan")))
    result = await post(
        jp_fetch,
        {"instruction": "Make it look like my sketch", "screenshot": True,
         "images": [data_url(sketch)]},
    )  # fmt: skip
    assert result["status"] == "applied", result
    assert result["images"] == 2 and result["notes"] == []

    content = llm.requests[0]["body"]["messages"][1]["content"]
    assert [part["type"] for part in content] == ["text", "text", "image_url", "text", "image_url"]
    assert content[0]["text"].endswith("Instruction:\nMake it look like my sketch")
    assert content[1]["text"] == "The app's page in the preview as it is now:"
    assert content[3]["text"] == "Image 1 of 1, attached by the user:"
    assert content[4]["image_url"]["url"] == data_url(sketch)  # as attached, byte for byte
    shot = content[2]["image_url"]["url"]
    assert shot.startswith("data:image/png;base64,")
    picture = base64.b64decode(shot.split(",", 1)[1])
    (ARTIFACTS / "vision-screenshot.png").write_bytes(picture)
    width, height, page = pixels(picture)
    assert (width, height) == (1280, 800)
    # The app rendered: its hero's violet is on the page, not a blank or error page.
    assert sum(1 for r, g, b in page if r > 100 and b > 180 and g < 90) > 500
    assert len(set(page)) > 100


@pytest.mark.parametrize("editor_config", [{"vision": False}])
async def test_without_vision_no_image_is_sent_and_the_user_is_told(
    jp_fetch, llm, runtime, editor_config
):
    runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    llm.answer(block("src/App.jsx", HEADING, HEADING.replace("Get started", "Hi")))
    result = await post(
        jp_fetch,
        {
            "instruction": "Like this",
            "screenshot": True,
            "images": [data_url(png(4, 4, (0, 0, 0)))],
        },
    )
    assert result["status"] == "applied" and result["images"] == 0
    note = (
        "Not sent: 1 attached image and the screenshot. This model is not set up to take "
        "images (an admin sets c.AIEditor.vision)."
    )
    assert result["notes"] == [note] and result["message"] == f"Changed src/App.jsx. {note}"
    assert isinstance(llm.requests[0]["body"]["messages"][1]["content"], str)  # text only


async def test_a_screenshot_of_a_preview_that_is_not_running_is_said_not_sent(
    jp_fetch, llm, runtime
):
    runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    llm.answer(block("src/App.jsx", HEADING, HEADING.replace("Get started", "Hi")))
    result = await post(jp_fetch, {"instruction": "Like this", "screenshot": True})
    assert result["status"] == "applied" and result["images"] == 0
    assert result["notes"] == [
        "No screenshot was sent: the preview is not running (start it, then ask again)."
    ]
    assert isinstance(llm.requests[0]["body"]["messages"][1]["content"], str)


async def test_bad_images_are_refused_before_the_model_is_asked(jp_fetch, llm, runtime):
    project = runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    before = history.head(project.app_dir), app_jsx(project)
    small = data_url(png(2, 2, (1, 2, 3)))
    cases = [
        ({"images": "sketch.png"}, 400, "Attach images as"),
        ({"images": ["https://example.invalid/a.png"]}, 400, "not a base64 data URL"),
        ({"images": [data_url(b"<svg/>", "image/png")]}, 400, "not a PNG, JPEG, GIF or WebP"),
        ({"images": ["data:image/png;base64,@@@"]}, 400, "not valid base64"),
        ({"images": [small] * 5}, 400, "At most 4 images"),
        ({"images": [data_url(b"\x89PNG\r\n\x1a\n" + bytes(6 << 20))]}, 413, "larger than 5 MiB"),
        ({"screenshot": "yes"}, 400, "true or false"),
    ]
    for extra, status, said in cases:
        body = json.dumps({"instruction": "Like this", **extra})
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("reactbox", "api", "projects", "shop", "edits", method="POST", body=body)
        assert err.value.code == status, (extra, err.value.response.body[:300])
        assert said in json.loads(err.value.response.body)["message"], extra
    assert not llm.requests
    assert_intact(project, *before)
