"""Anthropic's Messages dialect on fixed bodies and events: the translator, the encoders, the SSE framing (with
pings while the first event is awaited), the error shape and statuses, and the middleware's refusals in that
shape. No daemon, no model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from localllm.domain.errors import InvalidRequest, ModelNotFound, ServerBusy, Unauthorized
from localllm.domain.events import Done, Event, Thinking, Token, ToolCallArguments, ToolCalls, ToolCallStart
from localllm.domain.messages import ToolCall
from localllm.observability import logs
from localllm.server import dialects, fieldpolicy, openapi
from localllm.server.dialects.anthropic import api as an
from localllm.server.dialects.anthropic import requests as anr
from localllm.server.errors import message_of
from localllm.service.generation import Answer

from .test_registry import app_client

WEATHER = {"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}
BASE: dict[str, Any] = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def parse(**extra: Any) -> anr.Parsed:
    return anr.parse({**BASE, **extra})


def refused(body: dict[str, Any]) -> str | None:
    with pytest.raises(InvalidRequest) as info:
        anr.parse(body)
    return info.value.field


# -- the translator ------------------------------------------------------------------------------------------


def test_fields_map_onto_options_and_defaults() -> None:
    p = parse(temperature=0, top_p=0.5, top_k=3, stop_sequences=["\n\n"], stream=True, metadata={"user_id": "u"})
    o = p.chat.options
    assert (o.num_predict, o.temperature, o.top_p, o.top_k, o.stop) == (16, 0.0, 0.5, 3, ("\n\n",))
    assert p.stream and p.chat.think_budget is None and p.chat.think is None
    assert parse().chat.options.temperature == 1.0, "Anthropic's default temperature"


def test_what_claude_code_sends_is_understood() -> None:
    """Claude Code's first request: `context_management` clearing thinking, a `system` message inside
    `messages`, `cache_control` on blocks, tools and system blocks, a signed thinking block in history."""
    cached = {"type": "ephemeral"}
    chat = anr.parse(
        {
            **BASE,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": cached}],
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "tools": [{**WEATHER, "cache_control": cached}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": cached}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "EqQBCkgIAR..."},
                        {"type": "text", "text": "hello"},
                    ],
                },
                {"role": "system", "content": "The user switched to plan mode."},
                {"role": "user", "content": "go on"},
            ],
        }
    ).chat
    roles = [(m.role, m.content) for m in chat.messages]
    assert roles == [
        ("system", "You are Claude Code."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("system", "The user switched to plan mode."),
        ("user", "go on"),
    ], "the system message stays where it was sent (prompt.adapt folds it where a template has no system turn)"


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}


def test_a_tool_results_image_goes_to_its_tool_message_and_a_document_is_refused_naming_it() -> None:
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "shot:"}, IMAGE]}
    body = {**BASE, "messages": [{"role": "user", "content": [result]}]}
    (tool,) = anr.parse(body).chat.messages
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", "shot:<__media__>", "t1")
    assert [(m.kind, m.data, m.source) for m in tool.media] == [
        ("image", b"\x89\x50\x4e", "messages[0].content[0].content[1]")
    ]
    document = {"type": "document", "source": {"type": "text", "data": "x"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [document]}
    with pytest.raises(InvalidRequest) as info:
        anr.parse({**BASE, "messages": [{"role": "user", "content": [result]}]})
    assert info.value.field == "messages[0].content[0].content[0]" and "document blocks" in str(info.value)


def test_thinking_maps_onto_think_and_a_budget() -> None:
    enabled = parse(thinking={"type": "enabled", "budget_tokens": 8}).chat
    assert (enabled.think, enabled.think_budget) == (None, 8), "thinks where the model can, within 8 tokens"
    disabled = parse(thinking={"type": "disabled"}).chat
    assert (disabled.think, disabled.think_budget) == (False, None)
    adaptive = parse(thinking={"type": "adaptive"}).chat
    assert (adaptive.think, adaptive.think_budget) == (None, None)
    assert refused({**BASE, "thinking": {"type": "enabled"}}) == "thinking.budget_tokens"
    assert refused({**BASE, "thinking": {"type": "enabled", "budget_tokens": 0}}) == "thinking.budget_tokens"
    thinking = {"type": "enabled", "budget_tokens": 8}
    counted = anr.parse_count({"model": "m", "messages": [{"role": "user", "content": "hi"}], "thinking": thinking})
    assert counted.think_budget == 8, "count_tokens renders the prompt the generation would"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({**BASE, "max_tokens": 0}, "max_tokens"),
        ({**BASE, "temperature": 1.5}, "temperature"),
        ({**BASE, "messages": []}, "messages"),
        ({**BASE, "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({**BASE, "messages": [{"role": "system", "content": [IMAGE]}]}, "messages[0].content[0]"),
        (
            {**BASE, "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management.edits[0].type",
        ),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages[0].content[0].source.type",
        ),
        ({**BASE, "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]}, "messages[0].content[0]"),
        ({**BASE, "system": [IMAGE]}, "system[0]"),
        ({**BASE, "tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({**BASE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({**BASE, "tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({**BASE, "tool_choice": {"type": "any"}}, "tool_choice"),
        ({**BASE, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({**BASE, "tools": [WEATHER], "tool_choice": {"type": "required"}}, "tool_choice.type"),
        ({**BASE, "thinking": {"type": "enabled", "budget_tokens": 16}}, "thinking.budget_tokens"),
        ({**BASE, "thinking": {"type": "on"}}, "thinking.type"),
    ],
)
def test_bad_fields_are_refused_naming_them(body: dict[str, Any], field: str) -> None:
    assert refused(body) == field


def test_blocks_become_the_conversation() -> None:
    body = {
        **BASE,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": {"type": "ephemeral"}}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "they want weather", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": True},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "tools": [WEATHER],
    }
    chat = anr.parse(body).chat
    roles = [(m.role, m.content, m.tool_call_id) for m in chat.messages]
    assert roles == [
        ("system", "Be brief.\nBe kind.", None),
        ("user", "Weather?", None),
        ("assistant", "Let me look.", None),  # the thinking block is not part of the prompt
        ("tool", "sunny", "toolu_1"),
        ("tool", "Error: no such city", "toolu_2"),
        ("user", "Thanks", None),
    ]
    assert chat.messages[2].tool_calls == (ToolCall("toolu_1", "get_weather", {"city": "Oslo"}),)
    assert [t.name for t in chat.tools] == ["get_weather"] and not chat.call_required


def test_tool_choice_modes() -> None:
    auto = parse(tools=[WEATHER])
    assert auto.chat.tools and auto.chat.constraints.format is None
    none = parse(tools=[WEATHER], tool_choice={"type": "none"})
    assert none.chat.tools == () and not none.chat.call_required
    forced = parse(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    assert forced.chat.call_required
    assert forced.chat.constraints.format["properties"]["name"] == {"const": "get_weather"}
    anything = parse(tools=[WEATHER, {**WEATHER, "name": "other"}], tool_choice={"type": "any"})
    assert anything.chat.call_required and len(anything.chat.constraints.format["anyOf"]) == 2


def test_count_tokens_takes_the_prompt_fields_only() -> None:
    chat = anr.parse_count({"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s"})
    assert [m.role for m in chat.messages] == ["system", "user"]
    with fieldpolicy.begin(strict=False, client="sdk") as report:
        anr.parse_count({**BASE})
    assert report.ignored == ["max_tokens"], "not a field of count_tokens: reported (server/fieldpolicy.py)"
    with fieldpolicy.begin(strict=True, client="sdk"), pytest.raises(InvalidRequest) as info:
        anr.parse_count({**BASE})
    assert info.value.field == "max_tokens"


# -- the encoders -------------------------------------------------------------------------------------------

DONE = Done("stop", prompt_eval_count=7, eval_count=3, cached_tokens=2)


def test_whole_message() -> None:
    answer = Answer((Token("Once "), Token("upon")), DONE)
    out = an.whole("msg_1", "m", answer)
    assert out == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Once upon"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "output_tokens": 3,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 0,
        },
    }
    call = ToolCall("toolu_1", "get_weather", {"city": "Oslo"})
    called = an.whole("msg_1", "m", Answer((), DONE, (call,)))
    assert called["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    assert called["stop_reason"] == "tool_use"
    assert an.whole("x", "m", Answer((), Done("length")))["stop_reason"] == "max_tokens"
    stopped = an.whole("x", "m", Answer((Token("a"),), Done("stop", stop_sequence="\n")))
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "\n")


async def events(*items: Event, delay: float = 0) -> AsyncGenerator[Event, None]:
    for item in items:
        await asyncio.sleep(delay)
        yield item


def streamed(*items: Event) -> list[tuple[str, dict[str, Any]]]:
    async def drain() -> list[tuple[str, dict[str, Any]]]:
        return [e async for e in an.sse_events("msg_1", "m", events(*items))]

    return asyncio.run(drain())


def test_message_start_carries_the_prompts_tokens_counted_before_generating() -> None:
    assert anr.parse({**BASE, "stream": True}).chat.count_prompt, "a stream asks the service to count first"
    assert not anr.parse(BASE).chat.count_prompt, "a whole answer has them in its usage anyway"
    info, token = logs.begin(None, "anthropic")
    try:
        logs.note_prompt(42)
        start = streamed(DONE)[0][1]
    finally:
        logs.end(token)
    assert start["message"]["usage"]["input_tokens"] == 42
    assert streamed(DONE)[0][1]["message"]["usage"]["input_tokens"] == 0, "outside a request: not known"


def test_stream_events_in_order() -> None:
    call = ToolCall("toolu_1", "get_weather", {"city": "Oslo"})
    out = streamed(Thinking("hmm"), Token("Once "), Token("upon"), ToolCalls((call,)), DONE)
    assert [name for name, _ in out] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in out)
    assert out[0][1]["message"]["usage"]["output_tokens"] == 0
    assert out[1][1]["content_block"]["type"] == "thinking" and out[2][1]["delta"]["type"] == "thinking_delta"
    assert [d["index"] for n, d in out if n.startswith("content_block")] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert out[5][1]["delta"] == {"type": "text_delta", "text": "Once "}
    assert out[8][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert json.loads(out[9][1]["delta"]["partial_json"]) == {"city": "Oslo"}
    assert out[11][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert out[11][1]["usage"]["output_tokens"] == 3 and out[11][1]["usage"]["input_tokens"] == 7


def test_an_empty_answer_has_no_blocks() -> None:
    assert [name for name, _ in streamed(Done("length"))] == ["message_start", "message_delta", "message_stop"]


def test_sse_frames_carry_an_event_line() -> None:
    assert an.sse_frame(("ping", {"type": "ping"})) == b'event: ping\ndata: {"type":"ping"}\n\n'
    error = an.sse_frame(an.anthropic_error(ServerBusy("busy")))
    assert error == b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'


def test_pings_while_the_first_event_is_awaited() -> None:
    async def run() -> list[str]:
        stream = events(Token("a"), DONE, delay=0.25)
        pending: asyncio.Future[Event] = asyncio.ensure_future(stream.__anext__())
        opening = an.sse_events("msg_1", "m", an._first_then(pending, stream))
        return [name async for name, _ in an.with_pings(opening, pending, stream, 0.1)]

    names = asyncio.run(run())
    assert names[0] == "message_start" and names[1] == "ping" and "ping" not in names[3:]
    assert names[names.index("content_block_start") :] == [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (InvalidRequest("bad", field="x"), 400, "invalid_request_error"),
        (Unauthorized("who"), 401, "authentication_error"),
        (ModelNotFound("none"), 404, "not_found_error"),
        (ServerBusy("busy"), 529, "overloaded_error"),
        (RuntimeError("boom"), 500, "api_error"),
    ],
)
def test_errors_in_anthropics_shape(exc: Exception, status: int, kind: str) -> None:
    response = an.ERRORS.response(exc)
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {"type": "error", "error": {"type": kind, "message": message_of(exc)}}


def test_the_dialect_owns_its_paths() -> None:
    assert dialects.owner("/v1/messages", "POST").name == "anthropic"
    assert dialects.owner("/v1/messages/count_tokens", "POST").name == "anthropic"
    assert dialects.owner("/v1/messages", "GET").name == "anthropic"
    document = openapi.document()
    documented = document["paths"]
    ref = documented["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rpartition("/")[2]]
    assert {"model", "max_tokens", "messages"} <= set(schema["required"]) and "additionalProperties" not in schema
    assert {"system", "tools", "tool_choice", "thinking", "stop_sequences", "top_k"} <= set(schema["properties"])
    assert "529" in documented["/v1/messages"]["post"]["responses"]
    assert "/v1/messages/count_tokens" in documented


def test_middleware_refusals_in_anthropics_shape(tmp_path: Path) -> None:
    for client in app_client(tmp_path, api_keys=("sekret-sekret-sekret",), max_body=256):
        for headers in ({"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}, {}):
            r = client.post("/v1/messages", json=BASE, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", r.text
            assert r.json()["type"] == "error"
        host = client.post(
            "/v1/messages", json=BASE, headers={"x-api-key": "sekret-sekret-sekret", "Host": "evil.example"}
        )
        assert host.status_code == 403 and host.json()["error"]["type"] == "permission_error"
        big = client.post(
            "/v1/messages", json={**BASE, "system": "x" * 300}, headers={"x-api-key": "sekret-sekret-sekret"}
        )
        assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
        bad = client.post(
            "/v1/messages", json={**BASE, "max_tokens": None}, headers={"x-api-key": "sekret-sekret-sekret"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in bad.json()["error"]["message"]


def test_output_config_format_constrains_the_text() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    p = parse(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"})
    assert p.chat.constraints.format == schema and not p.chat.call_required
    assert parse(output_config={"effort": "high"}).chat.constraints.format is None
    assert refused({**BASE, "output_config": {"format": {"type": "text"}}}) == "output_config.format.type"
    forced = {"tools": [WEATHER], "tool_choice": {"type": "any"}}
    body = {**BASE, **forced, "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    assert refused(body) == "tool_choice"


def test_newer_sdk_fields_are_accepted() -> None:
    p = parse(thinking={"type": "adaptive"}, speed="fast", inference_geo="eu", cache_control={"type": "ephemeral"})
    assert p.chat.think_budget is None
    assert refused({**BASE, "container": "c"}) == "container"


def test_a_browser_may_send_the_anthropic_headers(tmp_path: Path) -> None:
    for client in app_client(tmp_path):
        headers = {
            "Origin": "http://127.0.0.1:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, anthropic-version, anthropic-dangerous-direct-browser-access",
        }
        r = client.options("/v1/messages", headers=headers)
        assert r.status_code == 204, r.text
        assert "anthropic-version" in r.headers["access-control-allow-headers"]


def test_a_streamed_call_is_a_tool_use_block_with_input_json_deltas() -> None:
    """A call read as it streams: its block starts with its id and name, its arguments come as
    `input_json_delta` pieces, and the whole `ToolCalls` after them adds no second block."""
    call = ToolCall("toolu_1", "get_weather", {"city": "Oslo"})
    pieces = (ToolCallArguments(0, '{"city": '), ToolCallArguments(0, '"Oslo"}'))
    out = streamed(Token("Let me see."), ToolCallStart(0, "toolu_1", "get_weather"), *pieces, ToolCalls((call,)), DONE)
    assert [name for name, _ in out] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert out[4][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert [d["delta"] for _, d in out[5:7]] == [
        {"type": "input_json_delta", "partial_json": '{"city": '},
        {"type": "input_json_delta", "partial_json": '"Oslo"}'},
    ]
    assert out[8][1]["delta"]["stop_reason"] == "tool_use"
