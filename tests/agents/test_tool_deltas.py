"""A tool call streams as deltas through the official SDKs, as the real APIs stream it: OpenAI's chat
`tool_calls` deltas (id and name first, then the arguments in pieces), the Responses API's
`response.function_call_arguments.delta` events and Anthropic's `tool_use` block with `input_json_delta`
pieces. The scripted runner (conftest.py) writes a known Qwen `<tool_call>` in 8-character pieces; every
part above the runner is real. The call each stream adds up to equals the non-streamed answer's."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import openai

from ..e2e.conftest import Daemon
from .conftest import MODEL, Script

ARGUMENTS = {"city": "São Paulo", "days": 12, "units": "metric", "notes": ["rain", "wind speed"]}
TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "units": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city"],
}
OPENAI_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL_SCHEMA}}]


def scripted(script: Script) -> None:
    call = json.dumps({"name": "get_weather", "arguments": ARGUMENTS}, ensure_ascii=False)
    script.set([{"when": [], "output": f"Let me check.<tool_call>\n{call}\n</tool_call>"}])


def test_openai_chat_stream_sends_the_call_as_deltas(agents_daemon: tuple[Daemon, Script]) -> None:
    d, script = agents_daemon
    scripted(script)
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "Weather in São Paulo?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, tools=OPENAI_TOOLS)
    (call,) = whole.choices[0].message.tool_calls or []
    deltas = []
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=OPENAI_TOOLS, stream=True):
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
    first, *rest = deltas
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather" and first.function.arguments == ""
    pieces = [d.function.arguments for d in rest if d.function is not None and d.function.arguments]
    assert len(pieces) > 3, pieces
    assert all(d.id is None and d.function is not None and d.function.name is None for d in rest)
    assert json.loads("".join(pieces)) == ARGUMENTS == json.loads(call.function.arguments)  # type: ignore[union-attr]


def test_responses_stream_sends_the_call_as_argument_deltas(agents_daemon: tuple[Daemon, Script]) -> None:
    d, script = agents_daemon
    scripted(script)
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": TOOL_SCHEMA}]
    whole = client.responses.create(model=MODEL, input="Weather in São Paulo?", tools=tools)
    (call,) = [i for i in whole.output if i.type == "function_call"]
    kinds, pieces = [], []
    with client.responses.stream(model=MODEL, input="Weather in São Paulo?", tools=tools) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.function_call_arguments.delta":
                pieces.append(event.delta)
        final = stream.get_final_response()
    assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.delta")
    assert len(pieces) > 3, pieces
    assert kinds.index("response.function_call_arguments.done") > max(
        i for i, k in enumerate(kinds) if k == "response.function_call_arguments.delta"
    )
    (streamed,) = [i for i in final.output if i.type == "function_call"]
    assert streamed.name == call.name == "get_weather"
    assert json.loads("".join(pieces)) == json.loads(streamed.arguments) == json.loads(call.arguments) == ARGUMENTS


def test_anthropic_stream_sends_the_call_as_input_json_deltas(agents_daemon: tuple[Daemon, Script]) -> None:
    d, script = agents_daemon
    scripted(script)
    client = anthropic.Anthropic(base_url=d.url, api_key="unused", max_retries=0)
    tools: Any = [{"name": "get_weather", "input_schema": TOOL_SCHEMA}]
    messages: Any = [{"role": "user", "content": "Weather in São Paulo?"}]
    whole = client.messages.create(model=MODEL, max_tokens=200, messages=messages, tools=tools)
    (call,) = [b for b in whole.content if b.type == "tool_use"]
    starts, pieces = [], []
    with client.messages.stream(model=MODEL, max_tokens=200, messages=messages, tools=tools) as stream:
        for event in stream:
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                starts.append(event.content_block)
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces.append(event.delta.partial_json)
        final = stream.get_final_message()
    (start,) = starts
    assert start.name == "get_weather" and start.id and start.input == {}
    assert len(pieces) > 3, pieces
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    assert streamed.input == call.input == ARGUMENTS == json.loads("".join(pieces))
    assert final.stop_reason == "tool_use"


SHORT = {  # short enough for the tiny model to finish within its tokens
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
SHORT_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": SHORT}}]


def test_a_required_call_from_the_real_tiny_model_streams_and_validates(agents_daemon: tuple[Daemon, Script]) -> None:
    """No script: the tiny model itself writes the call `tool_choice: required` constrains. On each SDK's
    stream the call arrives, and its arguments parse and validate against the tool's schema."""
    d, script = agents_daemon
    script.set([])
    oa = openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "Weather?"}]
    chat = oa.chat.completions.create(
        model=MODEL, messages=messages, tools=SHORT_TOOLS, tool_choice="required", stream=True, max_tokens=200, seed=1
    )
    arguments, names, content = "", [], ""
    for chunk in chat:
        content += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        for part in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names += [part.function.name] if part.function and part.function.name else []
            arguments += part.function.arguments or "" if part.function else ""
    assert names == ["get_weather"], (arguments, content)
    jsonschema.validate(json.loads(arguments), SHORT)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": SHORT}]
    with oa.responses.stream(
        model=MODEL, input="Weather?", tools=tools, tool_choice="required", max_output_tokens=200
    ) as s:
        final = s.get_final_response()
    (item,) = [i for i in final.output if i.type == "function_call"]
    jsonschema.validate(json.loads(item.arguments), SHORT)
    an = anthropic.Anthropic(base_url=d.url, api_key="unused", max_retries=0)
    an_tools: Any = [{"name": "get_weather", "input_schema": SHORT}]
    with an.messages.stream(
        model=MODEL, max_tokens=200, messages=messages, tools=an_tools, tool_choice={"type": "any"}
    ) as s:
        message = s.get_final_message()
    (block,) = [b for b in message.content if b.type == "tool_use"]
    jsonschema.validate(block.input, SHORT)
