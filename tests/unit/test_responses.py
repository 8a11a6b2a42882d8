"""The Responses dialect as pure functions: request bodies translated (each refusal naming its field), the
encoder's events for fixed service events, and the response store's bounds. No daemon, no model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from localllm.domain.errors import EngineError, InvalidRequest
from localllm.domain.events import Done, Event, Thinking, Token, ToolCallArguments, ToolCalls, ToolCallStart
from localllm.domain.messages import ChatMessage, ToolCall
from localllm.domain.names import parse_name
from localllm.server.dialects.responses.api import keep, stream
from localllm.server.dialects.responses.encode import Encoder, sse_named, whole
from localllm.server.dialects.responses.requests import Turn, parse_input, to_turn
from localllm.server.dialects.responses.wire import InputTokensRequest
from localllm.server.errors import RouteError
from localllm.server.wire import decode_dict
from localllm.service.generation import Answer
from localllm.service.responses_store import ResponseStore

WEATHER = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}


def turn(**body: Any) -> Turn:
    return to_turn({"model": "m", "input": "hi", **body}, ResponseStore())


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    t = turn(instructions="Be brief.", temperature=0.5, max_output_tokens=20, metadata={"a": "b"})
    assert t.chat.model == parse_name("m")
    assert t.chat.messages == (ChatMessage("system", "Be brief."), ChatMessage("user", "hi"))
    assert t.conversation == (ChatMessage("user", "hi"),)  # the instructions are not carried over
    assert t.chat.options.temperature == 0.5 and t.chat.options.num_predict == 20 and t.chat.options.top_p == 1.0
    assert t.store and not t.stream and t.echo["metadata"] == {"a": "b"} and t.echo["tool_choice"] == "none"


def test_what_codex_replays_is_understood() -> None:
    """Codex CLI's turns: `client_metadata`, `include`, `text.verbosity`, `reasoning.summary`, reasoning items
    with `encrypted_content`, and its local shell and custom tool calls with their outputs."""
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "thinking"}],
            "encrypted_content": "gAAAAB...",
        },
        {
            "type": "local_shell_call",
            "id": "lsh_1",
            "call_id": "c1",
            "status": "completed",
            "action": {"type": "exec", "command": ["ls"], "timeout_ms": 1000},
        },
        {"type": "local_shell_call_output", "id": "c1", "output": "a.txt"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "Done"},
    ]
    t = turn(
        input=items,
        client_metadata={"session_id": "s"},
        include=["reasoning.encrypted_content"],
        text={"verbosity": "low"},
        reasoning={"effort": "medium", "summary": "auto"},
        parallel_tool_calls=False,
        prompt_cache_key="k",
        store=False,
    )
    assert t.chat.messages == (
        ChatMessage("user", "list files"),
        ChatMessage(
            "assistant", "", (ToolCall("c1", "local_shell", {"type": "exec", "command": ["ls"], "timeout_ms": 1000}),)
        ),
        ChatMessage("tool", "a.txt", tool_call_id="c1"),
        ChatMessage("assistant", "", (ToolCall("c2", "apply_patch", {"input": "*** Begin Patch"}),)),
        ChatMessage("tool", "Done", tool_call_id="c2"),
    )
    with pytest.raises(InvalidRequest) as info:
        turn(input=[{"type": "web_search_call", "id": "ws_1", "status": "completed"}])
    assert info.value.field == "input[0].type" and "web search is not available" in str(info.value)


def test_input_items_become_messages_calls_and_results() -> None:
    items = [
        {"role": "developer", "content": "sys"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
    ]
    assert parse_input(decode_dict({"input": items}, InputTokensRequest).input or "") == (
        ChatMessage("system", "sys"),
        ChatMessage("user", "a\nb"),  # text parts join with a newline (domain.parts, as llama.cpp does)
        ChatMessage("assistant", "", (ToolCall("c1", "weather", {"city": "Paris"}), ToolCall("c2", "weather", {}))),
        ChatMessage("tool", "sunny", tool_call_id="c1"),
        ChatMessage("assistant", "ok"),
    )


def test_flat_function_tools_and_a_forced_choice_constrain_the_output() -> None:
    t = turn(tools=[WEATHER], tool_choice={"type": "function", "name": "weather"})
    assert [tool.name for tool in t.chat.tools] == ["weather"] and t.chat.call_required
    assert t.chat.constraints.format["properties"]["name"] == {"const": "weather"}
    assert turn(tools=[WEATHER], tool_choice="none").chat.tools == ()
    # what agents send beside their functions (hosted tools, Codex's freeform tools) is left out, not refused
    mixed = turn(tools=[{"type": "web_search"}, {"type": "custom", "name": "apply_patch"}, WEATHER])
    assert [tool.name for tool in mixed.chat.tools] == ["weather"] and mixed.echo["tools"][0] == {"type": "web_search"}


def test_text_format() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "x", "schema": schema, "strict": True}
    assert turn(text={"format": fmt}).chat.constraints.format == schema
    assert turn(text={"format": {"type": "json_object"}}).chat.constraints.format == "json"
    assert turn(text={"format": {"type": "text"}}).chat.constraints.format is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": 3}, "input"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0].arguments"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"tools": ["web_search"]}, "tools[0].type"),
        ({"tools": [{"type": "function", "name": 3}]}, "tools[0].name"),
        ({"tools": [{"type": "custom", "name": "x"}, {"type": "function", "name": "a b"}]}, "tools[1].name"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"tools": [{"type": "function", "name": "f", "parameters": "x"}]}, "tools[0].parameters"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        turn(**body)
    assert info.value.field == field


def test_previous_response_id_prepends_the_stored_conversation() -> None:
    store = ResponseStore()
    first = to_turn({"model": "m", "input": "one", "instructions": "sys"}, store)
    final = whole(first, Answer((Token("two"),), Done("stop", 3, eval_count=1)))
    keep(store, first, final)
    second = to_turn({"model": "m", "input": "three", "previous_response_id": first.id}, store)
    assert [m.content for m in second.chat.messages] == ["one", "two", "three"]
    with pytest.raises(RouteError) as info:
        to_turn({"model": "m", "input": "x", "previous_response_id": "resp_nope"}, store)
    assert info.value.status == 404


def test_stream_events_are_numbered_and_ordered_and_end_in_the_whole_object() -> None:
    t = turn()
    enc = Encoder(t)
    events = enc.start()
    for event in (Thinking("hm"), Token("Hel"), Token("lo"), ToolCalls((ToolCall("c", "weather", {"x": 1}),))):
        events += enc.feed(event)
    tail, final = enc.finish(Done("stop", 4, eval_count=5, cached_tokens=2))
    events += tail
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0] == {
        "type": "output_text",
        "text": "Hello",
        "annotations": [],
        "logprobs": [],
    }
    assert json.loads(final["output"][2]["arguments"]) == {"x": 1} and final["output"][2]["call_id"] == "c"
    assert final["usage"] == {
        "input_tokens": 6,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
    }
    assert events[-1]["response"] == final and final["status"] == "completed"
    # the ids of each item are the same when added and when done
    added = {e["output_index"]: e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
    done = {e["output_index"]: e["item"]["id"] for e in events if e["type"] == "response.output_item.done"}
    assert added == done


def test_a_length_stop_is_incomplete() -> None:
    final = whole(turn(), Answer((Token("x"),), Done("length", 1, eval_count=1)))
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"


def test_sse_frames_carry_the_event_name() -> None:
    assert sse_named({"type": "response.created", "sequence_number": 0}) == (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    )


def test_store_bounds_count_bytes_and_expiry() -> None:
    now = [0.0]
    store = ResponseStore(max_count=2, max_bytes=10_000, ttl=10, clock=lambda: now[0])
    conv = (ChatMessage("user", "x"),)
    for i in range(3):
        assert store.put({"id": f"resp_{i}"}, conv)
    assert store.get("resp_0") is None and store.get("resp_2") is not None and len(store) == 2
    assert not store.put({"id": "big", "pad": "x" * 20_000}, conv)  # over the byte bound alone: not kept
    now[0] = 11
    assert store.get("resp_2") is None and len(store) == 0 and store.bytes == 0
    assert store.put({"id": "a"}, conv) and store.delete("a") and not store.delete("a")


def test_an_error_after_the_stream_began_ends_it_with_response_failed_and_nothing_is_stored() -> None:
    async def events() -> AsyncGenerator[Event, None]:
        yield Token("Once")
        raise EngineError("the runner died")

    async def drain() -> list[dict[str, Any]]:
        return [e async for e in stream(t, events(), store)]

    store = ResponseStore()
    t = turn()
    out = asyncio.run(drain())
    assert [e["type"] for e in out][-2:] == ["response.output_text.delta", "response.failed"]
    failed = out[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"] == "the runner died"
    assert [e["sequence_number"] for e in out] == list(range(len(out))) and store.get(t.id) is None


def test_a_streamed_call_is_a_function_call_item_with_argument_deltas() -> None:
    """A call read as it streams: its item is added (in progress, empty arguments), its arguments come as
    `response.function_call_arguments.delta` pieces, then `.done` and the item done with the whole call."""
    enc = Encoder(turn())
    call = ToolCall("call_1", "weather", {"city": "Oslo"})
    events: list[dict[str, Any]] = []
    for event in (
        Token("Let me see."),
        ToolCallStart(0, "call_1", "weather"),
        ToolCallArguments(0, '{"city": '),
        ToolCallArguments(0, '"Oslo"}'),
        ToolCalls((call,)),
    ):
        events += enc.feed(event)
    tail, final = enc.finish(Done("stop"))
    events += tail
    kinds = [e["type"] for e in events]
    assert kinds[kinds.index("response.output_item.done") + 1 :] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[kinds.index("response.output_item.added", 3)]
    assert added["item"]["status"] == "in_progress" and added["item"]["arguments"] == ""
    assert added["item"]["call_id"] == "call_1" and added["output_index"] == 1
    assert [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"] == [
        '{"city": ',
        '"Oslo"}',
    ]
    assert [(i["type"], i.get("arguments")) for i in final["output"]] == [
        ("message", None),
        ("function_call", '{"city": "Oslo"}'),
    ]
    assert final["output"][1]["status"] == "completed"
