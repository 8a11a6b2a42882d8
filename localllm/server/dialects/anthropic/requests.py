"""Translate Anthropic Messages request bodies onto the service's chat requests: pure functions, each bad field
an `InvalidRequest` naming it. The fields are declared once (`FIELDS`, `STRUCTURED`): the parser, the
unknown-field check and the OpenAPI schema all read them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ....chat.thinking import Think
from ....chat.tools import ToolChoice, call_schema, tool_name
from ....domain.errors import InvalidRequest
from ....domain.types import ChatMessage, Constraints, Options, Tool, ToolCall
from ....service.generation import ChatRequest
from ... import requests as rq
from ...fields import STOP, Field, Fields, as_options
from ...schema import INT, OBJ, STR, Schema, obj
from ..shared import block_text

# -- requests: the fields, declared once ----------------------------------------------------------------

# Fields whose values are structured (blocks, tools): parsed below, declared here for the unknown-field check
# and the schema.
BLOCKS: Schema = {"type": "array", "items": OBJ}
STRUCTURED: dict[str, Schema] = {
    "messages": {"type": "array", "items": obj({"role": STR, "content": {"anyOf": [STR, BLOCKS]}}), "minItems": 1},
    "system": {"anyOf": [STR, BLOCKS]},
    "tools": {"type": "array", "items": obj({"name": STR, "description": STR, "input_schema": OBJ})},
    "tool_choice": obj({"type": {"enum": ["auto", "any", "tool", "none"]}, "name": STR}),
    "thinking": obj({"type": {"enum": ["enabled", "adaptive", "disabled"]}, "budget_tokens": {**INT, "minimum": 1}}),
    "output_config": obj({"format": obj({"type": {"const": "json_schema"}, "schema": OBJ}), "effort": STR}),
}
COUNT_FIELDS = Fields(Field("model", str, required=True))
FIELDS = COUNT_FIELDS + Fields(
    Field("max_tokens", int, low=1, required=True, option="num_predict"),
    Field("temperature", float, low=0, high=1, default=1.0, option="temperature"),
    Field("top_p", float, low=0, high=1, option="top_p"),
    Field("top_k", int, low=0, option="top_k"),
    Field("stop_sequences", STOP, option="stop"),
    Field("stream", bool, default=False),
    Field("metadata", dict),  # accepted and ignored (`user_id`)
    Field("service_tier", str),  # accepted and ignored, as the next three
    Field("speed", str),
    Field("inference_geo", str),
    Field("cache_control", dict),  # prompt caching is automatic here (a slot's KV is reused)
)


@dataclass(frozen=True)
class Parsed:
    """A Messages request: the chat request (with its thinking and budget) and whether it streams."""

    chat: ChatRequest
    stream: bool = False


def parse(body: dict[str, Any]) -> Parsed:
    """Translate `POST /v1/messages`."""
    FIELDS.check(body, also=STRUCTURED)
    values = FIELDS.read(body)
    chat = _chat(body, as_options(values, FIELDS), values["max_tokens"])
    fmt = _output_format(body)
    if fmt is not None:
        if chat.call_required:
            raise InvalidRequest(
                "a forced tool_choice cannot be combined with output_config.format", field="tool_choice"
            )
        chat = replace(chat, constraints=replace(chat.constraints, format=fmt))
    return Parsed(chat, values["stream"])


def _output_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """`output_config.format` (`{"type": "json_schema", "schema": ...}`): the output is constrained to it;
    `output_config.effort` is accepted and ignored."""
    config = rq.field(body, "output_config", dict)
    if config is None:
        return None
    fmt = rq.field(config, "format", dict, prefix="output_config.")
    if fmt is None:
        return None
    if fmt.get("type") != "json_schema":
        raise InvalidRequest('output_config.format.type must be "json_schema"', field="output_config.format.type")
    schema: dict[str, Any] = rq.field(fmt, "schema", dict, required=True, prefix="output_config.format.")
    return schema


def parse_count(body: dict[str, Any]) -> ChatRequest:
    """Translate `POST /v1/messages/count_tokens`: the same prompt, no sampling."""
    COUNT_FIELDS.check(body, also=STRUCTURED)
    return _chat(body, Options(), None)


def _chat(body: dict[str, Any], options: Options, max_tokens: int | None) -> ChatRequest:
    name = rq.model_name(body)
    think, budget = _thinking(body, max_tokens)
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), tools)
    schema = call_schema(tools, choice)
    return ChatRequest(
        model=name,
        messages=(*_system(body.get("system")), *_messages(body)),
        options=options,
        constraints=Constraints(format=schema),
        tools=tools if choice.mode != "none" else (),
        call_required=schema is not None,
        think=think,
        think_budget=budget,
    )


def _system(raw: Any) -> tuple[ChatMessage, ...]:
    if raw is None:
        return ()
    text = block_text(raw, "system", sep="\n", noun="text block")
    return (ChatMessage("system", text),) if text else ()


def _messages(body: dict[str, Any]) -> list[ChatMessage]:
    raw = rq.field(body, "messages", list, required=True)
    if not raw:
        raise InvalidRequest("messages must hold at least one message", field="messages")
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        label = f"messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        role = rq.field(item, "role", str, required=True, prefix=f"{label}.")
        if role not in ("user", "assistant"):
            raise InvalidRequest(
                f"{label}.role must be user or assistant (system goes in `system`)", field=f"{label}.role"
            )
        content = item.get("content")
        if isinstance(content, str):
            out.append(ChatMessage(role, content))
        elif isinstance(content, list):
            out += _blocks(role, content, f"{label}.content")
        else:
            raise InvalidRequest(f"{label}.content must be a string or a list of blocks", field=f"{label}.content")
    return out


def _blocks(role: str, blocks: list[Any], label: str) -> list[ChatMessage]:
    """One turn's blocks as chat messages: a user turn's tool results become tool messages (before its text),
    an assistant turn's `tool_use` blocks its tool calls; `thinking` blocks are dropped."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for j, block in enumerate(blocks):
        where = f"{label}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise InvalidRequest(f"{where} must be a block with a type", field=where)
        if kind == "text":
            texts.append(rq.field(block, "text", str, required=True, prefix=f"{where}."))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # an earlier turn's reasoning is not part of the prompt (as Anthropic's API does)
        elif kind == "tool_use" and role == "assistant":
            name = tool_name(block.get("name"), f"{where}.name")
            arguments = rq.field(block, "input", dict, {}, prefix=f"{where}.")
            call_id = rq.field(block, "id", str, required=True, prefix=f"{where}.")
            calls.append(ToolCall(call_id, name, arguments))
        elif kind == "tool_result" and role == "user":
            call_id = rq.field(block, "tool_use_id", str, required=True, prefix=f"{where}.")
            text = block_text(block.get("content") or "", f"{where}.content", sep="\n", noun="text block")
            if rq.field(block, "is_error", bool, False, prefix=f"{where}."):
                text = f"Error: {text}"
            results.append(ChatMessage("tool", text, tool_call_id=call_id))
        elif kind in ("image", "document"):
            raise InvalidRequest(f"{where}: {kind} blocks are not supported (the models here read text)", field=where)
        else:
            raise InvalidRequest(f"{where}: a {role} turn cannot hold a '{kind}' block here", field=where)
    text = "\n".join(texts)
    if role == "assistant":
        return [ChatMessage("assistant", text, tuple(calls))] if text or calls else []
    return [*results, *([ChatMessage("user", text)] if text or not results else [])]


def _tools(raw: Any) -> tuple[Tool, ...]:
    """Custom tools (`name`, `description`, `input_schema`); Anthropic's server tools are refused."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("tools must be a list of tools", field="tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        label = f"tools[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        if item.get("type", "custom") != "custom":
            raise InvalidRequest(
                f"{label}: server tools (type '{item.get('type')}') are not supported, only custom tools", field=label
            )
        name = tool_name(item.get("name"), f"{label}.name")
        description = rq.field(item, "description", str, "", prefix=f"{label}.")
        schema = rq.field(item, "input_schema", dict, required=True, prefix=f"{label}.")
        if any(t.name == name for t in tools):
            raise InvalidRequest(f"{label}: tool '{name}' is declared twice", field=f"{label}.name")
        tools.append(Tool(name, description, schema))
    return tuple(tools)


CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> ToolChoice:
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in (*CHOICES, "tool"):
        raise InvalidRequest('tool_choice.type must be "auto", "any", "tool" or "none"', field="tool_choice.type")
    if kind in ("any", "tool") and not tools:
        raise InvalidRequest(f'tool_choice "{kind}" needs tools', field="tool_choice")
    if kind != "tool":
        return ToolChoice(CHOICES[kind])
    name = rq.field(raw, "name", str, required=True, prefix="tool_choice.")
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names '{name}', which is not among the tools", field="tool_choice.name")
    return ToolChoice("named", name)


def _thinking(body: dict[str, Any], max_tokens: int | None) -> tuple[Think, int | None]:
    """`thinking` as a `think` and a budget: `enabled` thinks (where the model can) within `budget_tokens`
    (checked as Anthropic does, but from 1 token rather than 1024), `disabled` turns thinking off, `adaptive`
    (or nothing) leaves it to the model's template."""
    raw = rq.field(body, "thinking", dict)
    if raw is None or raw.get("type") == "adaptive":
        return None, None
    if raw.get("type") == "disabled":
        return False, None
    if raw.get("type") != "enabled":
        raise InvalidRequest('thinking.type must be "enabled", "adaptive" or "disabled"', field="thinking.type")
    budget: int = rq.field(raw, "budget_tokens", int, required=True, prefix="thinking.")
    if budget < 1 or (max_tokens is not None and budget >= max_tokens):
        raise InvalidRequest(
            f"thinking.budget_tokens must be at least 1 and less than max_tokens, got {budget}",
            field="thinking.budget_tokens",
        )
    return None, budget
