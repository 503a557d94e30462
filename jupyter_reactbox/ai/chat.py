"""One question to the model: a chat completion through the ``openai`` client
(any OpenAI-compatible endpoint), its failures said in words a user can act on,
its tokens counted (``schema.Usage``) and spent from the owner's daily budget."""

from __future__ import annotations

import asyncio
from typing import Any

import openai

from ..errors import ModelError
from .budget import TokenBudget


class Chat:
    """An editor's model, as it asks it."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        max_tokens: int,
        max_answer_chars: int,
        budget: TokenBudget | None = None,
    ):
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.max_answer_chars = max_answer_chars
        self.budget = budget

    async def ask(self, messages: list[Any], usage: dict[str, int]) -> str:
        """The model's answer to ``messages``; its tokens are added to ``usage`` and
        spent from the day's budget.  ModelError, saying what to do, when there is
        no answer to use."""
        message = await self._complete(messages, usage)
        return self._checked(message.content or "")

    async def ask_with_tools(
        self, messages: list[Any], tools: list[dict], usage: dict[str, int]
    ) -> dict:
        """The model's next message when it may call ``tools`` (an agent's step): a
        dict for the conversation, with ``tool_calls`` when it calls some."""
        message = await self._complete(messages, usage, tools=tools)
        out: dict[str, Any] = {"role": "assistant", "content": self._checked(message.content or "")}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": self._checked(call.function.arguments or ""),
                    },
                }
                for call in message.tool_calls
                if call.type == "function"
            ]
        return out

    def _checked(self, answer: str) -> str:
        if len(answer) > self.max_answer_chars:
            raise ModelError(
                f"The model's answer has {len(answer)} characters, over the limit of "
                f"{self.max_answer_chars} (c.AIEditor.max_answer_chars); nothing was applied."
            )
        return answer

    async def _complete(self, messages: list[Any], usage: dict[str, int], **extra):
        try:
            response = await self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=0,
                **extra,
            )
        except openai.APITimeoutError as exc:
            raise ModelError(
                f"The model did not answer within {self.client.timeout} s (c.AIEditor.timeout)."
            ) from exc
        except openai.RateLimitError as exc:
            raise ModelError(
                "The model endpoint keeps answering 429 (rate limit) after "
                f"{self.client.max_retries} retries; try again in a minute."
            ) from exc
        except openai.APIConnectionError as exc:
            raise ModelError(
                f"Cannot reach the model endpoint {self.client.base_url}: {exc}"
            ) from exc
        except openai.APIStatusError as exc:
            raise ModelError(
                f"The model endpoint answered {exc.status_code}: {str(exc.message)[:300]}"
            ) from exc
        if response.usage:
            prompt = response.usage.prompt_tokens or 0
            completion = response.usage.completion_tokens or 0
            usage["prompt_tokens"] += prompt
            usage["completion_tokens"] += completion
            usage["total_tokens"] += prompt + completion
            if self.budget is not None:
                await asyncio.to_thread(self.budget.spend, prompt + completion)
        if not response.choices:
            raise ModelError("The model endpoint answered with no choices.")
        return response.choices[0].message
