"""What writing an OpenAI answer costs on the hot path: µs per chat stream chunk (built and framed as SSE) and
per whole chat completion (built and made a response), for the reply models (this checkout: `openai/replies.py`,
encoded by msgspec) against the dicts and `json.dumps` they replaced (written out here as they were).

    .venv/bin/python bench/reply_encode.py

docs/request-path.md ("Writing the answer") has the figures. Best of 7 rounds; both ways in one process, so
their ratio holds on a loaded machine where the absolute figures do not. Each way's output is checked to be
the same JSON first.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from localllm.domain.events import Done, Token, TokenLogprob
from localllm.server.dialects.openai import api as openai
from localllm.server.dialects.openai.requests import Shape
from localllm.server.replies import reply
from localllm.server.streaming import sse_event
from localllm.service.generation import Answer

FRAMING = openai.Framing("chatcmpl-0123456789abcdef01234567", 1700000000, "qwen3:0.6b", True, Shape(), (0,))
TOKEN = Token(" hello")
TOP = tuple((i, f" t{i}", -1.5 - i) for i in range(5))
WITH_LOGPROBS = Token(" hello", (TokenLogprob(42, " hello", tuple(b" hello"), -0.125, TOP),))
ANSWER = Answer(tuple(Token(f" word{i}") for i in range(200)), Done("stop", 50, 1, 200, 1))


def _envelope(obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    f = FRAMING
    return {
        "id": f.id,
        "object": obj,
        "created": f.created,
        "model": f.model,
        "system_fingerprint": "fp_localllm",
        "choices": choices,
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def dict_chunk(token: Token) -> bytes:
    """A token's chunk as the dict encoders built it, framed by `sse_event`'s `json.dumps`."""
    choice: dict[str, Any] = {"index": 0, "delta": {"content": token.text}, "logprobs": None, "finish_reason": None}
    if token.logprobs:
        choice["logprobs"] = {
            "content": [
                {
                    "token": lp.token,
                    "logprob": lp.logprob,
                    "bytes": list(lp.bytes),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top],
                }
                for lp in token.logprobs
            ],
            "refusal": None,
        }
    return f"data: {_dumps(_envelope('chat.completion.chunk', [choice]))}\n\n".encode()


def model_chunk(token: Token) -> bytes:
    return sse_event(FRAMING.chat_chunk([openai.chat_token_choice(0, token)]))


def dict_whole() -> bytes:
    """The whole completion as the dict encoders built it (`whole`, `whole_choice`, `_usage`), made a
    `JSONResponse`."""
    answers = [ANSWER]
    choices = []
    for i, answer in enumerate(answers):
        text = answer.text
        lps = answer.logprobs if FRAMING.shape.logprobs else []
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if answer.thinking:
            message["reasoning_content"] = answer.thinking
        finish = openai.FINISH.get(answer.done.reason, "stop")
        choices.append({"index": i, "message": message, "logprobs": lps or None, "finish_reason": finish})
    done = answers[0].done
    prompt = done.prompt_eval_count + done.cached_tokens
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": done.eval_count,
        "total_tokens": prompt + done.eval_count,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }
    return bytes(JSONResponse({**_envelope("chat.completion", choices), "usage": usage}).body)


def model_whole() -> bytes:
    return bytes(reply(openai.whole(FRAMING, [ANSWER])).body)


def best(fn: Callable[[], bytes], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    cases: list[tuple[str, Callable[[], bytes], Callable[[], bytes], int]] = [
        ("chat chunk (a token)", lambda: dict_chunk(TOKEN), lambda: model_chunk(TOKEN), 100_000),
        ("chat chunk, top-5 logprobs", lambda: dict_chunk(WITH_LOGPROBS), lambda: model_chunk(WITH_LOGPROBS), 50_000),
        ("whole completion (200 pieces)", dict_whole, model_whole, 20_000),
    ]
    print(f"{'case':32s} {'dicts + json.dumps':>20s} {'reply models':>14s}")
    for name, before, after, number in cases:
        assert json.loads(before().removeprefix(b"data: ")) == json.loads(after().removeprefix(b"data: ")), name
        print(f"{name:32s} {best(before, number):17.2f} µs {best(after, number):11.2f} µs")


if __name__ == "__main__":
    main()
