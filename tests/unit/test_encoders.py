"""The typed answers: tool calls held back once (in `tools.held_back`, for every dialect), one `collect()`, and
the dialects' encoders as pure functions from events to wire objects. No daemon, no model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec

from localllm.chat.tools import held_back
from localllm.domain.events import Done, Event, Token, TokenLogprob, ToolCallArguments, ToolCalls, ToolCallStart
from localllm.domain.messages import Tool, ToolCall
from localllm.server.dialects.ollama import encode as ollama
from localllm.server.dialects.openai import api as openai
from localllm.server.dialects.openai.requests import Shape
from localllm.server.streaming import sse_event
from localllm.service.generation import Answer, collect

WEATHER = (Tool("weather", "", {"type": "object"}),)
CALL = '<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
DONE = Done("stop", prompt_eval_count=3, eval_count=4, total_duration=10)


async def stream(*events: Event) -> AsyncGenerator[Event, None]:
    for event in events:
        yield event


def run(events: AsyncGenerator[Event, None]) -> list[Event]:
    async def drain() -> list[Event]:
        return [e async for e in events]

    return asyncio.run(drain())


def pieces(text: str, size: int = 5) -> list[Token]:
    return [Token(text[i : i + size]) for i in range(0, len(text), size)]


# -- holding back tool calls -----------------------------------------------------------------------------


def test_a_call_is_held_back_and_comes_as_tool_calls_before_done() -> None:
    out = run(held_back(stream(*pieces(CALL), DONE), WEATHER))
    assert len(out) == 2 and isinstance(out[0], ToolCalls) and out[1] == DONE
    (call,) = out[0].calls
    assert (call.name, call.arguments) == ("weather", {"city": "Paris"})


def test_plain_text_is_released_as_soon_as_it_cannot_be_a_call() -> None:
    out = run(held_back(stream(Token(" "), Token("Hello"), Token(" there"), DONE), WEATHER))
    assert out == [Token(" Hello"), Token(" there"), DONE]


def test_held_text_that_is_no_call_goes_out_whole_with_its_logprobs() -> None:
    lp = TokenLogprob(1, "{", (123,), -0.5)
    out = run(held_back(stream(Token("{", (lp,)), Token('"a": 1}'), DONE), WEATHER))
    assert out == [Token('{"a": 1}', (lp,)), DONE]


def test_a_forced_call_is_held_even_when_it_does_not_look_like_one() -> None:
    out = run(held_back(stream(Token("x"), Token("y"), DONE), WEATHER, forced=True))
    assert out == [Token("xy"), DONE]


def test_collect_makes_one_answer() -> None:
    call = ToolCall("call_1", "weather", {})
    answer = asyncio.run(collect(stream(Token("a"), Token("b"), ToolCalls((call,)), DONE)))
    assert answer == Answer((Token("a"), Token("b")), DONE, (call,))
    assert answer.text == "ab"


# -- Ollama's encoders -----------------------------------------------------------------------------------


def test_ollama_lines() -> None:
    line = msgspec.to_builtins(ollama.encode(Token("Hi"), "m", "message", context=False))
    assert line["message"] == {"role": "assistant", "content": "Hi"} and line["done"] is False
    calls = msgspec.to_builtins(
        ollama.encode(ToolCalls((ToolCall("call_1", "weather", {"city": "Paris"}),)), "m", "message", context=False)
    )
    assert calls["message"]["tool_calls"] == [
        {"id": "call_1", "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}}}
    ]
    last = msgspec.to_builtins(ollama.encode(Done("stop", eval_count=4, context=(1, 2)), "m", "response", context=True))
    assert last["response"] == "" and last["done"] is True and last["eval_count"] == 4 and last["context"] == [1, 2]
    assert "context" not in msgspec.to_builtins(
        ollama.encode(Done("load", context=(1,)), "m", "response", context=True)
    )


def test_ollama_whole_answer() -> None:
    call = ToolCall("call_1", "weather", {})
    whole = msgspec.to_builtins(ollama.encode_whole(Answer((), DONE, (call,)), "m", "message", context=False))
    assert whole["message"]["content"] == "" and whole["message"]["tool_calls"][0]["function"]["name"] == "weather"
    whole = msgspec.to_builtins(
        ollama.encode_whole(Answer((Token("a"), Token("b")), DONE), "m", "response", context=False)
    )
    assert (whole["response"], whole["done"], whole["done_reason"], whole["eval_count"]) == ("ab", True, "stop", 4)
    assert list(whole)[:4] == ["model", "created_at", "response", "done"]


# -- OpenAI's encoders -----------------------------------------------------------------------------------


def framing(chat: bool = True, n: int = 1, **shape: Any) -> openai.Framing:
    return openai.Framing("chatcmpl-1", 1700000000, "m", chat, Shape(n=n, **shape), tuple([0] * n))


def chunks(f: openai.Framing, events: Sequence[tuple[int, Event]]) -> list[dict[str, Any]]:
    async def tagged() -> AsyncGenerator[tuple[int, Event], None]:
        for item in events:
            yield item

    async def drain() -> list[dict[str, Any]]:
        return [msgspec.to_builtins(c) async for c in openai.chunks(f, tagged(), f.shape.n)]

    return asyncio.run(drain())


def whole(f: openai.Framing, answers: Sequence[Answer]) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(openai.whole(f, answers))
    return out


def test_openai_chunks_bytes() -> None:
    """The bytes of a stream's chunks: every choice's fields in OpenAI's order (index, delta, logprobs,
    finish_reason), `usage` null until the last with `include_usage`."""

    events: list[tuple[int, Event]] = [(0, Token("Hi")), (0, DONE)]

    async def drain() -> list[bytes]:
        async def tagged() -> AsyncGenerator[tuple[int, Event], None]:
            for item in events:
                yield item

        f = framing(include_usage=True)
        return [sse_event(c) async for c in openai.chunks(f, tagged(), 1)]

    first, text, last, usage = (
        line.removeprefix(b"data: ").removesuffix(b"\n\n").decode() for line in asyncio.run(drain())
    )
    head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m",'
    head += '"system_fingerprint":"fp_localllm","choices":'
    assert (
        first
        == head
        + '[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}'
    )
    assert text == head + '[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}'
    assert last == head + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}'
    assert json.loads(usage)["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_openai_tool_call_chunks_finish_with_tool_calls() -> None:
    call = ToolCall("call_1", "weather", {"city": "Paris"})
    out = chunks(framing(n=2), [(1, ToolCalls((call,))), (0, Token("x")), (1, DONE), (0, Done("length"))])
    deltas = [(c["choices"][0]["index"], c["choices"][0].get("delta"), c["choices"][0]["finish_reason"]) for c in out]
    assert deltas[2] == (
        1,
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
        None,
    )
    assert deltas[4:] == [(1, {}, "tool_calls"), (0, {}, "length")]


def test_openai_whole_answers() -> None:
    call = ToolCall("call_1", "weather", {})
    answer = whole(framing(), [Answer((), DONE, (call,))])
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert answer["object"] == "chat.completion" and answer["usage"]["total_tokens"] == 7
    f = openai.Framing("cmpl-1", 1, "m", False, Shape(echo=True), (0,), ("Once",))
    text = whole(f, [Answer((Token(" upon"),), Done("length"))])["choices"][0]
    assert text == {"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "length"}


def test_best_of_keeps_the_most_likely() -> None:
    def answer(logprob: float, text: str) -> Answer:
        return Answer((Token(text, (TokenLogprob(1, text, (), logprob),)),), DONE)

    f = openai.Framing("cmpl-1", 1, "m", False, Shape(n=1, best_of=3, logprobs=False), (0, 0, 0))
    out = whole(f, [answer(-3, "a"), answer(-1, "b"), answer(-2, "c")])
    assert [c["text"] for c in out["choices"]] == ["b"] and out["usage"]["completion_tokens"] == 12


def test_openai_a_streamed_call_is_tool_calls_deltas_id_and_name_first() -> None:
    """As OpenAI streams a call: the first delta carries its index, id, type and name with empty arguments,
    the next ones pieces of the arguments; the whole `ToolCalls` after them adds nothing; the finish is
    `tool_calls`."""
    call = ToolCall("call_1", "get_weather", {"city": "Oslo"})
    events: list[tuple[int, Event]] = [
        (0, ToolCallStart(0, "call_1", "get_weather")),
        (0, ToolCallArguments(0, '{"city": ')),
        (0, ToolCallArguments(0, '"Oslo"}')),
        (0, ToolCalls((call,))),
        (0, Done("stop")),
    ]
    out = chunks(framing(), events)
    deltas = [c["choices"][0].get("delta") for c in out[1:]]
    assert deltas == [
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
        {},
    ]
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
