"""Anthropic's Messages API against a real daemon and the chat-template copy of stories260K, through the
official `anthropic` package: text whole and streamed, a forced tool call, a tool result round trip, counted
tokens, the errors in Anthropic's shape (401 with a wrong key, 404 for an unknown model), and the SSE stream's
bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from ..conftest import CHAT_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with, start_daemon, stop_daemon

CHAT = f"hf.co/{CHAT_REPO}"
USER: Any = [{"role": "user", "content": "Once upon a time"}]
WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: Any = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_ARGS}]
GREEDY = {"temperature": 0}  # the SDK no longer has sampling parameters; the API still takes them


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("anthropic"), hub, (CHAT_REPO,), LOCALLLM_STREAM_INTERVAL="0") as d:
        yield d


@pytest.fixture
def client(server: Daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def greedy_chat_text(server: Daemon, max_tokens: int) -> str:
    """What /v1/chat/completions answers to the same conversation: the same generation, another dialect."""
    body = {"model": CHAT, "messages": USER, "temperature": 0, "max_tokens": max_tokens}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["message"]["content"]
    return text


def test_create_answers_the_stories_text(client: anthropic.Anthropic, server: Daemon) -> None:
    out = client.messages.create(model=CHAT, max_tokens=12, messages=USER, extra_body=GREEDY)
    assert out.id.startswith("msg_") and out.type == "message" and out.role == "assistant" and out.model == CHAT
    assert len(out.content) == 1 and out.content[0].type == "text"
    text = out.content[0].text
    assert text.startswith(", there was") and text == greedy_chat_text(server, 12)
    assert out.stop_reason == "max_tokens" and out.stop_sequence is None
    assert out.usage.output_tokens == 12
    assert out.usage.input_tokens + (out.usage.cache_read_input_tokens or 0) > 3


def test_stream_gives_the_same_text_in_pieces(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=CHAT, max_tokens=12, messages=USER, extra_body=GREEDY)
    with client.messages.stream(model=CHAT, max_tokens=12, messages=USER, extra_body=GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2 and "".join(pieces) == whole.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 12


def test_a_stop_sequence_ends_the_answer_and_is_named(client: anthropic.Anthropic) -> None:
    out = client.messages.create(model=CHAT, max_tokens=30, messages=USER, extra_body=GREEDY, stop_sequences=["girl"])
    assert out.stop_reason == "stop_sequence" and out.stop_sequence == "girl"
    assert out.content[0].text == ", there was a little "  # type: ignore[union-attr]


def test_forced_tool_use_validates(client: anthropic.Anthropic) -> None:
    choice: Any = {"type": "tool", "name": "get_weather"}
    out = client.messages.create(
        model=CHAT, max_tokens=120, messages=USER, tools=TOOLS, tool_choice=choice, extra_body=GREEDY
    )
    assert out.stop_reason == "tool_use"
    assert [b.type for b in out.content] == ["tool_use"]
    block = out.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.id
    jsonschema.validate(block.input, WEATHER_ARGS)
    with client.messages.stream(
        model=CHAT, max_tokens=120, messages=USER, tools=TOOLS, tool_choice=choice, extra_body=GREEDY
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    assert final.content[0].input == block.input


def test_tool_result_round_trip_and_count_tokens(client: anthropic.Anthropic) -> None:
    history: Any = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo", "unit": "celsius"},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Once upon a time it was sunny"}],
        },
    ]
    system = "A story."
    out = client.messages.create(
        model=CHAT, max_tokens=8, system=system, messages=history, tools=TOOLS, extra_body=GREEDY
    )
    assert out.stop_reason == "max_tokens" and out.content and out.content[0].type == "text"
    counted = client.messages.count_tokens(model=CHAT, system=system, messages=history, tools=TOOLS)
    # Anthropic's input_tokens leave out the tokens read from the cache (a slot's KV reused)
    assert counted.input_tokens == out.usage.input_tokens + (out.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens > 20  # the tool result is in the prompt
    fresh = [{"role": "user", "content": "Lily had a red ball and a big dog named Max."}]
    again = client.messages.create(model=CHAT, max_tokens=4, messages=fresh, extra_body=GREEDY)  # type: ignore[arg-type]
    counted = client.messages.count_tokens(model=CHAT, messages=fresh)  # type: ignore[arg-type]
    assert counted.input_tokens == again.usage.input_tokens + (again.usage.cache_read_input_tokens or 0)


def test_unknown_model_is_a_404_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=4, messages=USER)
    body: Any = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "no-such-model" in body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):  # a stream's early error too, with its status
        with client.messages.stream(model="no-such-model", max_tokens=4, messages=USER) as stream:
            stream.get_final_message()


def test_bad_requests_are_400s_naming_the_field(client: anthropic.Anthropic) -> None:
    image: Any = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=CHAT, max_tokens=4, messages=image)
    body: Any = info.value.body
    assert body["error"]["type"] == "invalid_request_error", body
    assert body["error"]["message"].startswith("messages[0].content[0].source.data: "), body
    assert "base64" in body["error"]["message"], body


def events_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The SSE stream parsed strictly: every event is an `event:` line, a `data:` line and a blank line."""
    text = raw.decode()
    assert text.endswith("\n\n")
    out = []
    for chunk in text[:-2].split("\n\n"):
        match = re.fullmatch(r"event: ([a-z_]+)\ndata: (.+)", chunk)
        assert match, chunk
        out.append((match[1], json.loads(match[2])))
    return out


def test_the_sse_bytes(server: Daemon) -> None:
    body = {"model": CHAT, "max_tokens": 6, "messages": USER, "temperature": 0, "stream": True}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "fine-grained-tool-streaming-2025-05-14"}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    events = [(n, d) for n, d in events_of(raw) if n != "ping"]
    names = [n for n, _ in events]
    k = names.count("content_block_delta")  # pieces as the runner sends them (a few tokens may come together)
    assert k >= 1 and names == ["message_start", "content_block_start", *["content_block_delta"] * k] + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(d["type"] == n for n, d in events)
    counted = httpx.post(server.url + "/v1/messages/count_tokens", json={"model": CHAT, "messages": USER}, timeout=60)
    assert events[0][1]["message"]["usage"] == {
        "input_tokens": counted.json()["input_tokens"],  # the prompt's tokens, counted before generating
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert all(d["delta"]["type"] == "text_delta" and d["index"] == 0 for d in deltas)
    assert "".join(d["delta"]["text"] for d in deltas) == greedy_chat_text(server, 6)
    assert events[-2][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[-2][1]["usage"]["output_tokens"] == 6 and events[-1][1] == {"type": "message_stop"}
    assert raw.startswith(b"event: message_start\ndata: {")


def test_a_wrong_key_is_a_401_in_anthropics_shape(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> None:
    d = start_daemon(tmp_path_factory.mktemp("anthropic-keys"), hub, LOCALLLM_API_KEYS="sekret-sekret-sekret")
    try:
        for wrong in (
            anthropic.Anthropic(base_url=d.url, api_key="wrong", max_retries=0),  # x-api-key
            anthropic.Anthropic(base_url=d.url, auth_token="wrong", max_retries=0),  # Authorization: Bearer
        ):
            with pytest.raises(anthropic.AuthenticationError) as info:
                wrong.messages.create(model=CHAT, max_tokens=4, messages=USER)
            body: Any = info.value.body
            assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        for right in (
            anthropic.Anthropic(base_url=d.url, api_key="sekret-sekret-sekret", max_retries=0),
            anthropic.Anthropic(base_url=d.url, auth_token="sekret-sekret-sekret", max_retries=0),
        ):
            with pytest.raises(anthropic.NotFoundError):  # past the key check: the model is not pulled here
                right.messages.count_tokens(model=CHAT, messages=USER)
    finally:
        stop_daemon(d)
