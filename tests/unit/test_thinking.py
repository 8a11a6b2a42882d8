"""The streaming think-parser on fixed piece sequences, and the service's splitting of events (no model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest

from localllm.chat import prompt
from localllm.chat.thinking import Kind, ThinkParser, opens_thinking, split_thinking
from localllm.chat.tools import held_back
from localllm.domain.events import Done, Event, Thinking, Token, TokenLogprob, ToolCalls
from localllm.domain.messages import ChatMessage, Tool
from localllm.service.generation import collect

from ..fakes import render_chat

QWEN3 = (Path(__file__).parent.parent / "data" / "thinking" / "Qwen-Qwen3-0.6B.jinja").read_text()


def parse(pieces: Sequence[str], *, opened: bool = False) -> tuple[str, str, list[tuple[Kind, str]]]:
    """The thinking, the answer, and every part in order, of `pieces` fed one by one."""
    parser = ThinkParser(opened=opened)
    parts = [part for piece in pieces for part in parser.feed(piece)] + parser.flush()
    thought = "".join(t for k, t in parts if k == "thinking")
    answer = "".join(t for k, t in parts if k == "content")
    return thought, answer, parts


def every_split(text: str) -> list[list[str]]:
    """`text` cut into two pieces at every place, and into single characters."""
    return [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]


def test_thinking_then_answer_whatever_the_pieces() -> None:
    text = "<think>\nI should greet.\n</think>\n\nHello there."
    for pieces in every_split(text):
        thought, answer, _ = parse(pieces)
        assert (thought, answer) == ("I should greet.", "Hello there."), pieces


def test_leading_whitespace_before_the_tag() -> None:
    assert parse(["\n ", " <th", "ink>a</th", "ink>b"])[:2] == ("a", "b")


def test_no_think_tag_is_all_answer() -> None:
    for pieces in every_split("Hello <think> is not at the start"):
        assert parse(pieces)[:2] == ("", "Hello <think> is not at the start")
    assert parse(["<thi", "s is text"])[:2] == ("", "<this is text")
    assert parse(["<", "b>bold</b>"])[:2] == ("", "<b>bold</b>")


def test_prompt_opened_think_only_closes_in_the_output() -> None:
    for pieces in every_split("\nweighing it</think>\n\nThe answer."):
        assert parse(pieces, opened=True)[:2] == ("weighing it", "The answer."), pieces


def test_output_that_never_closes_is_all_thinking() -> None:
    assert parse(["<think>", "still ", "going </", "thi"])[:2] == ("still going </thi", "")
    assert parse(["all of it"], opened=True)[:2] == ("all of it", "")


def test_a_partial_tag_is_held_then_released_as_text() -> None:
    parser = ThinkParser()
    assert parser.feed("<thi") == []  # may still be <think>
    assert parser.feed("nk>x </th") == [("thinking", "x")]  # "</th" (and the space) may still be </think>
    assert parser.feed("e end") == [("thinking", " </the end")]
    assert parser.flush() == []


def test_an_empty_think_block_and_only_whitespace() -> None:
    assert parse(["<think>\n\n</think>\n\n", "Hi"])[:2] == ("", "Hi")
    assert parse(["  \n"])[:2] == ("", "")


def test_tags_in_the_answer_after_thinking_are_answer_text() -> None:
    assert parse(["<think>a</think>b <think>c</think>"])[:2] == ("a", "b <think>c</think>")


def test_opens_thinking() -> None:
    assert opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not opens_thinking("<|im_start|>assistant\n")


async def _events(pieces: Sequence[str]) -> AsyncGenerator[Event, None]:
    for i, piece in enumerate(pieces):
        yield Token(piece, (TokenLogprob(i, piece, tuple(piece.encode()), -0.5),))
    yield Done("stop", eval_count=len(pieces))


def _run(events: AsyncGenerator[Event, None]) -> list[Event]:
    async def gather() -> list[Event]:
        return [e async for e in events]

    return asyncio.run(gather())


def test_split_thinking_events_stream_in_order() -> None:
    out = _run(split_thinking(_events(["<think>", "plan", "</think>", "Hi", "!"])))
    assert out[0] == Thinking("plan")
    assert [e.text for e in out if isinstance(e, Token)] == ["Hi", "!"]
    assert all(isinstance(e, Token) and e.logprobs for e in out if isinstance(e, Token))
    assert isinstance(out[-1], Done) and out[-1].eval_count == 5
    answer = asyncio.run(collect(split_thinking(_events(["<think>", "plan", "</think>", "Hi", "!"]))))
    assert (answer.thinking, answer.text) == ("plan", "Hi!")


def test_held_text_comes_out_before_done() -> None:
    out = _run(split_thinking(_events(["<think>a", " </thin"])))
    assert out[:-1] == [Thinking("a"), Thinking(" </thin")] and isinstance(out[-1], Done)


TOOLS = (Tool("get_weather", "the weather", {"type": "object", "properties": {"city": {"type": "string"}}}),)


def test_tool_calls_after_thinking_are_parsed_and_the_thinking_is_not_a_call() -> None:
    pieces = ["<think>", '{"name": "get_weather", "arguments": {"city": "x"}}', "</think>\n"]
    pieces += ['<tool_call>\n{"name": "get_weather", ', '"arguments": {"city": "Paris"}}\n</tool_call>']
    out = _run(held_back(split_thinking(_events(pieces)), TOOLS))
    assert out[0] == Thinking('{"name": "get_weather", "arguments": {"city": "x"}}')
    calls = [e for e in out if isinstance(e, ToolCalls)]
    assert len(calls) == 1 and [(c.name, c.arguments) for c in calls[0].calls] == [("get_weather", {"city": "Paris"})]
    assert not [e for e in out if isinstance(e, Token)]


def test_a_call_only_in_the_thinking_is_no_call() -> None:
    pieces = ["<think>", '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', "</think>", "Sunny."]
    out = _run(held_back(split_thinking(_events(pieces)), TOOLS))
    assert not [e for e in out if isinstance(e, ToolCalls)]
    assert "".join(e.text for e in out if isinstance(e, Token)) == "Sunny."


def test_qwen3_template_is_a_thinking_template_and_switches_on_enable_thinking() -> None:
    assert prompt.supports_thinking(QWEN3)
    assert not prompt.supports_thinking("{{ messages[0].content }}") and not prompt.supports_thinking(None)
    messages = [ChatMessage("user", "Hi")]
    on = render_chat(messages, template=QWEN3, think=True)
    default = render_chat(messages, template=QWEN3)
    off = render_chat(messages, template=QWEN3, think=False)
    assert on == default == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert off == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_an_earlier_answers_reasoning_goes_back_to_the_template() -> None:
    messages = [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello.", thinking="be kind")]
    text = render_chat([*messages, ChatMessage("user", "Again")], template=QWEN3)
    assert "Hello." in text and "be kind" not in text  # Qwen3 drops reasoning of turns before the last question
    last = render_chat(messages, template=QWEN3)
    assert "<think>\nbe kind\n</think>\n\nHello." in last


@pytest.mark.parametrize("think", [True, "high"])
def test_think_variables(think: bool | str) -> None:
    variables = prompt.think_variables(think)
    assert variables["enable_thinking"] is True
    assert variables.get("reasoning_effort") == (think if isinstance(think, str) else None)


# -- the dialects: `think` and `reasoning_effort` in, thinking out in its own field -----------------------


def test_ollama_think_and_openai_reasoning_effort_translate() -> None:
    from localllm.server.dialects.ollama import requests as ollama
    from localllm.server.dialects.openai.requests import to_chat_request

    for think in (True, False, "low", "medium", "high", None):
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}], "think": think}
        assert ollama.to_chat_request(body)[0].think == think
        assert ollama.to_generate_request({"model": "m", "think": think})[0].think == think
    past = {"role": "assistant", "content": "a", "thinking": "t"}
    (message,) = ollama.to_chat_request({"model": "m", "messages": [past]})[0].messages
    assert message.thinking == "t"
    efforts: dict[str | None, bool | str | None] = {"none": False, "minimal": False, "low": "low", "medium": "medium"}
    efforts |= {"high": "high", "xhigh": "high", None: None}
    for effort, think in efforts.items():
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}
        req = to_chat_request(body)[0]
        assert (req.think, req.think_field) == (think, "reasoning_effort")
    past = {"role": "assistant", "content": "a", "reasoning_content": "t"}
    assert to_chat_request({"model": "m", "messages": [past]})[0].messages[0].thinking == "t"


def test_ollama_encodes_thinking_apart() -> None:
    import msgspec

    from localllm.server.dialects.ollama import encode as ollama

    line = msgspec.to_builtins(ollama.encode(Thinking("hmm"), "m", "message", context=False))
    assert line["message"] == {"role": "assistant", "content": "", "thinking": "hmm"} and line["done"] is False
    assert msgspec.to_builtins(ollama.encode(Thinking("hmm"), "m", "response", context=False))["thinking"] == "hmm"
    assert "thinking" not in msgspec.to_builtins(ollama.encode(Token("a"), "m", "response", context=False))
    answer = asyncio.run(collect(split_thinking(_events(["<think>hmm</think>", "Hi"]))))
    chat = msgspec.to_builtins(ollama.encode_whole(answer, "m", "message", context=False))
    assert chat["message"]["thinking"] == "hmm" and chat["message"]["content"] == "Hi"
    generated = msgspec.to_builtins(ollama.encode_whole(answer, "m", "response", context=False))
    assert (generated["thinking"], generated["response"]) == ("hmm", "Hi")


def test_openai_encodes_reasoning_content() -> None:
    import msgspec

    from localllm.server.dialects.openai import api as openai
    from localllm.server.dialects.openai.requests import Shape

    framing = openai.Framing("chatcmpl-1", 1, "m", True, Shape(), (0,))

    async def tagged() -> AsyncGenerator[tuple[int, Event], None]:
        async for event in split_thinking(_events(["<think>", "hmm", "</think>", "Hi"])):
            yield 0, event

    async def drain() -> list[dict[str, Any]]:
        return [msgspec.to_builtins(c) async for c in openai.chunks(framing, tagged(), 1)]

    deltas = [c["choices"][0]["delta"] for c in asyncio.run(drain())]
    assert deltas[1:] == [{"reasoning_content": "hmm"}, {"content": "Hi"}, {}]
    answer = asyncio.run(collect(split_thinking(_events(["<think>hmm</think>", "Hi"]))))
    message = msgspec.to_builtins(openai.whole(framing, [answer]))["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("hmm", "Hi")
    plain = msgspec.to_builtins(openai.whole(framing, [asyncio.run(collect(_events(["Hi"])))]))["choices"][0]["message"]
    assert "reasoning_content" not in plain


# -- the library's reasoning models sample as their authors recommend for thinking ------------------------


def test_library_reasoning_models_have_their_thinking_parameters() -> None:
    from localllm.modelstore import library

    found = {name: mf for name, mf in library.entries() if name.split(":")[0] in ("qwen3", "deepseek-r1")}
    assert any(n.startswith("qwen3:") for n in found) and any(n.startswith("deepseek-r1:") for n in found)
    for name, mf in found.items():
        params = mf.parameters
        assert (params["temperature"], params["top_p"]) == (0.6, 0.95), name
        if name.startswith("qwen3:"):  # Qwen3's card: top_k 20, min_p 0; its GGUFs': presence_penalty 1.5
            assert (params["top_k"], params["min_p"], params["presence_penalty"]) == (20, 0, 1.5), name


def test_when_the_output_is_parsed_for_thinking() -> None:
    from localllm.chat.thinking import splits

    plain, opened = "<|im_start|>assistant\n", "<｜Assistant｜><think>\n"
    assert not splits(False, None, opened)  # a template that cannot think: never
    assert splits(True, None, plain) and splits(True, True, plain) and splits(True, "high", plain)
    assert not splits(True, False, plain)  # thinking turned off in the template: the output is the answer
    assert splits(True, False, opened)  # ...unless the prompt opens <think> itself regardless
    assert not splits(True, None, plain, default=False) and splits(True, True, plain, default=False)  # raw
