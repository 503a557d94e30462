"""A real HTTP server that speaks the OpenAI chat-completions API with scripted answers.

The product talks to it through the real ``openai`` client; this is the only
stand-in in the test suite (for the model itself).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field

from tornado import httpserver, netutil, web


@dataclass
class Reply:
    content: str = ""
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)
    """Tool calls (name, arguments), as a model in an agent's step answers."""


class ScriptedLLM:
    def __init__(self, address: str = "127.0.0.1"):
        self.address = address
        self.script: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.server: httpserver.HTTPServer | None = None
        self.port = 0

    def answer(self, content: str = "", **kw) -> None:
        self.script.append(Reply(content, **kw))

    def call(self, *calls: tuple[str, dict], content: str = "") -> None:
        """An answer that calls tools: ``call(("read_file", {"path": "src/App.jsx"}))``."""
        self.script.append(Reply(content, calls=list(calls)))

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.port}/v1"

    def start(self) -> None:
        llm = self

        class Completions(web.RequestHandler):
            async def post(self):
                body = json.loads(self.request.body)
                llm.requests.append(
                    {"body": body, "authorization": self.request.headers.get("Authorization")}
                )
                if not llm.script:
                    self.set_status(500)
                    return self.finish({"error": {"message": "no scripted answer left"}})
                reply = llm.script.popleft()
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                for k, v in reply.headers.items():
                    self.set_header(k, v)
                if reply.status != 200:
                    self.set_status(reply.status)
                    return self.finish({"error": {"message": reply.content, "type": "scripted"}})
                self.finish(
                    {
                        "id": f"chatcmpl-{len(llm.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": reply.content,
                                    **(
                                        {
                                            "tool_calls": [
                                                {
                                                    "id": f"call_{len(llm.requests)}_{n}",
                                                    "type": "function",
                                                    "function": {
                                                        "name": name,
                                                        "arguments": json.dumps(args),
                                                    },
                                                }
                                                for n, (name, args) in enumerate(reply.calls)
                                            ]
                                        }
                                        if reply.calls
                                        else {}
                                    ),
                                },
                                "finish_reason": "tool_calls" if reply.calls else "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 100,
                            "completion_tokens": 20,
                            "total_tokens": 120,
                        },
                    }
                )

        app = web.Application([(r"/v1/chat/completions", Completions)])
        sockets = netutil.bind_sockets(0, self.address)
        self.port = sockets[0].getsockname()[1]
        self.server = httpserver.HTTPServer(app, max_buffer_size=64 << 20)
        self.server.add_sockets(sockets)

    def stop(self) -> None:
        if self.server:
            self.server.stop()

    def user_messages(self, n: int) -> list[str]:
        """The user-role messages of request ``n``."""
        return [m["content"] for m in self.requests[n]["body"]["messages"] if m["role"] == "user"]


class ThreadedLLM(ScriptedLLM):
    """The same server on a loop of its own, for tests that block (kernels, nbclient)."""

    def start(self) -> None:
        import threading

        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ScriptedLLM.start(self)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name="scripted-llm")
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(ScriptedLLM.stop, self)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
