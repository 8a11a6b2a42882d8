"""Reply models (server/replies.py): every route's answer in the OpenAPI document comes from one, and what the
encoders send is what the models declare (a field they do not name, a wrong type or a missing field fails:
the models refuse unknown fields). OpenAI's, Ollama's and Anthropic's encoders build the models; the others
write dicts, read back here as their models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any

import msgspec
import pytest

from localllm.domain.errors import InvalidRequest, ModelNotFound
from localllm.domain.events import (
    Done,
    Event,
    Thinking,
    Token,
    TokenLogprob,
    ToolCallArguments,
    ToolCalls,
    ToolCallStart,
)
from localllm.domain.messages import ToolCall
from localllm.server import replies
from localllm.server.dialects import DIALECTS, reply_models
from localllm.server.dialects.anthropic import api as anthropic
from localllm.server.dialects.anthropic import replies as anthropic_replies
from localllm.server.dialects.ollama import encode as ollama
from localllm.server.dialects.ollama import replies as ollama_replies
from localllm.server.dialects.openai import api as openai
from localllm.server.dialects.openai import replies as openai_replies
from localllm.server.dialects.openai.requests import Shape
from localllm.server.dialects.responses import replies as responses_replies
from localllm.server.dialects.responses.encode import Encoder, error_event, whole
from localllm.server.dialects.responses.requests import to_turn
from localllm.server.openapi import document
from localllm.server.streaming import sse_event
from localllm.service.generation import Answer
from localllm.service.responses_store import ResponseStore

CALL = ToolCall("call_1", "weather", {"city": "Oslo"})
LOGPROB = TokenLogprob(5, "Hi", tuple(b"Hi"), -0.25, ((5, "Hi", -0.25), (6, "Ho", -2.0)))
DONE = Done("stop", 3, 10, 4, 20, 5, 40, context=(1, 2, 3), cached_tokens=1, truncated=2, stop_sequence="\n")
EVENTS: list[Event] = [
    Thinking("hmm"),
    Token("Hi", (LOGPROB,)),
    ToolCallStart(0, "call_1", "weather"),
    ToolCallArguments(0, '{"city": "Oslo"}'),
    ToolCalls((CALL,)),
    DONE,
]
ANSWER = Answer((Token("Hi", (LOGPROB,)),), DONE, (CALL,), "hmm")


def checked(value: Any, kind: Any) -> Any:
    """`value` (what an encoder made: builtins or a reply model) as it goes on the wire, read back as `kind`:
    a field `kind` does not name, a wrong type or a missing field raises."""
    raw = msgspec.json.encode(value) if isinstance(value, msgspec.Struct) else json.dumps(value).encode()
    return msgspec.json.decode(raw, type=kind)


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_answer_schema_comes_from_a_reply_model() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    assert not [name for name in schemas if "." in name], "two models of one name: rename one"
    assert all(ref.rpartition("/")[2] in schemas for ref in _refs(doc)), "a reference to no component"
    generated = {json.dumps(replies.schema_of(kind), sort_keys=True) for kind in reply_models()}
    answered = 0
    for path, method, operation in _operations():
        for status, response in operation["responses"].items():
            for media, content in response.get("content", {}).items():
                schema = content["schema"]
                if media == replies.SSE:
                    schema = schema["properties"]["data"]
                if media in (replies.SSE, replies.NDJSON):
                    schema = schema.get("else", schema)["contentSchema"]  # `else`: past OpenAI's [DONE]
                members = schema.get("anyOf", [schema])
                for member in members:
                    written = json.dumps(member, sort_keys=True)
                    assert list(member) == ["$ref"] or written in generated, f"{method} {path} {status}: by hand"
                answered += 1
    assert answered > 100


def test_every_dialect_with_paths_declares_its_replies() -> None:
    for dialect in DIALECTS:
        if dialect.paths():
            assert dialect.replies or dialect.name == "compat", dialect.name  # compat answers in its siblings'


# -- OpenAI: the encoders build the models; the bytes are compact and in OpenAI's order -----------------------


def _drain(framing: openai.Framing, events: Sequence[tuple[int, Event]]) -> list[Any]:
    async def tagged() -> AsyncGenerator[tuple[int, Event], None]:
        for item in events:
            yield item

    async def run() -> list[Any]:
        return [c async for c in openai.chunks(framing, tagged(), framing.shape.n)]

    return asyncio.run(run())


def test_openai_chunks_are_reply_models_and_frame_as_compact_json() -> None:
    chat = openai.Framing("chatcmpl-1", 1, "m", True, Shape(include_usage=True, logprobs=True), (0,))
    out = _drain(chat, [(0, e) for e in EVENTS])
    assert all(isinstance(c, openai_replies.ChatCompletionChunk) for c in out)
    assert [checked(c, openai_replies.ChatCompletionChunk) for c in out] == out
    frame = sse_event(out[2])  # the token, with its log-probabilities
    assert frame == b"data: " + json.dumps(msgspec.to_builtins(out[2]), separators=(",", ":")).encode() + b"\n\n"
    assert json.loads(frame[6:])["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"] == "Ho"
    assert out[-1].usage is not None and out[-1].choices == [] and all(c.usage is None for c in out[:-1])
    text = openai.Framing("cmpl-1", 1, "m", False, Shape(echo=True), (0,), ("Once",))
    pieces = _drain(text, [(0, Token(" upon", (LOGPROB,))), (0, DONE)])
    assert all(isinstance(c, openai_replies.TextCompletion) for c in pieces)
    assert [c.choices[0].text for c in pieces] == ["Once", " upon", ""]


def test_openai_whole_answers_are_reply_models() -> None:
    chat = openai.Framing("chatcmpl-1", 1, "m", True, Shape(logprobs=True), (0,))
    out = checked(openai.whole(chat, [ANSWER]), openai_replies.ChatCompletion)
    message = out.choices[0].message
    assert (message.content, message.reasoning_content, out.choices[0].finish_reason) == ("Hi", "hmm", "tool_calls")
    text = openai.Framing("cmpl-1", 1, "m", False, Shape(logprobs=True), (0,))
    legacy = checked(openai.whole(text, [ANSWER]), openai_replies.TextCompletion)
    assert legacy.choices[0].logprobs is not None and legacy.choices[0].logprobs.text_offset == [0]


@pytest.mark.parametrize("key", ["response", "message"])
def test_ollama_lines_are_reply_models_in_ollamas_order(key: str) -> None:
    kind = ollama_replies.OllamaGenerateLine if key == "response" else ollama_replies.OllamaChatLine
    context = key == "response"  # as the routes call them: a chat has no `context`
    made = [ollama.encode(e, "m", key, context=context) for e in EVENTS]
    assert all(type(line) is kind for line in made)
    lines = [checked(line, kind) for line in made]
    last = list(json.loads(msgspec.json.encode(made[-1])))
    text = ["response"] if key == "response" else ["message"]
    counters = ["done", "done_reason", "total_duration", "load_duration", "prompt_eval_count"]
    counters += ["prompt_eval_duration", "eval_count", "eval_duration", "truncated"]
    assert last == ["model", "created_at", *text, *counters, *(["context"] if context else [])]
    assert lines[-1].done and lines[-1].truncated == 2
    whole_line = checked(ollama.encode_whole(ANSWER, "m", key, context=context), kind)
    assert whole_line.done and whole_line.logprobs and whole_line.logprobs[0].token == "Hi"
    if key == "message":
        assert whole_line.message.tool_calls[0].function.arguments == {"city": "Oslo"}


def test_anthropic_events_and_message_are_reply_models() -> None:
    async def run() -> list[Any]:
        async def events() -> AsyncGenerator[Event, None]:
            for event in EVENTS:
                yield event

        return [item async for item in anthropic.sse_events("msg_1", "m", events())]

    items = asyncio.run(run())
    for item in items:
        frame = anthropic.sse_frame(item).decode()
        name, data = frame.removeprefix("event: ").removesuffix("\n\n").split("\ndata: ")
        assert checked(item, anthropic_replies.StreamEvent) == item and json.loads(data)["type"] == name
    error = anthropic.anthropic_error(InvalidRequest("bad", field="x"))
    assert isinstance(checked(error, anthropic_replies.StreamEvent), anthropic_replies.AnthropicError)
    message = checked(anthropic.whole("msg_1", "m", ANSWER), anthropic_replies.AnthropicMessageObject)
    assert [type(b).__name__ for b in message.content] == ["AnthropicThinking", "AnthropicText", "AnthropicToolUse"]


# -- the dialects whose encoders write builtins: what they write fits their models -----------------------------


def test_responses_events_and_object_fit_their_models() -> None:
    turn = to_turn({"model": "m", "input": "hi", "instructions": "be brief", "temperature": 0.5}, ResponseStore())
    encoder = Encoder(turn)
    sent = [*encoder.start(), *(e for event in EVENTS[:-1] for e in encoder.feed(event))]
    finished, final = encoder.finish(DONE)
    sent += [*finished, encoder.fail(ModelNotFound("gone")), error_event(ModelNotFound("gone"))]
    kinds = [type(checked(e, responses_replies.StreamEvent)).__name__ for e in sent]
    assert kinds[:2] == ["Created", "InProgress"] and kinds[-3:] == ["Completed", "Failed", "StreamError"]
    assert checked(final, responses_replies.ResponseObject).status == "completed"
    assert checked(whole(turn, ANSWER), responses_replies.ResponseObject).output


def test_a_field_the_model_does_not_name_fails_the_check() -> None:
    line = msgspec.to_builtins(ollama.encode(Token("x"), "m", "response", context=False))
    with pytest.raises(msgspec.ValidationError, match="unknown field `surprise`"):
        checked({**line, "surprise": 1}, ollama_replies.OllamaGenerateLine)
    with pytest.raises(msgspec.ValidationError, match="missing required field `done`"):
        checked({k: v for k, v in line.items() if k != "done"}, ollama_replies.OllamaGenerateLine)
