"""Translate Responses request bodies onto a chat (`Turn`): pure functions, each bad field a 400 naming it.

Fields are declared once in `FIELDS` (parse, the unknown-field check, the OpenAPI schema); fields that do not
apply to a local server (`user`, `metadata`, `prompt_cache_key`, `service_tier`, ...) are accepted, echoed or
ignored.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ....chat import thinking
from ....chat.tools import call_schema, parse_tool_choice, parse_tools
from ....domain.errors import InvalidRequest
from ....domain.types import ChatMessage, Constraints, Options, Tool, ToolCall
from ....service.generation import ChatRequest
from ....service.responses_store import ResponseStore
from ... import requests as rq
from ...errors import RouteError
from ...fields import Field, Fields, as_options, check_fields
from ..shared import block_text

log = logging.getLogger("localllm.server")

# Fields, declared once: parse, the unknown-field check and the OpenAPI schema. `input` and `tool_choice`
# (a string or a list/object) are read below and listed in `OTHER`.
FIELDS = Fields(
    Field("model", str),
    Field("instructions", str),
    Field("tools", list, default=[]),
    Field("temperature", float, low=0, high=2, option="temperature"),
    Field("top_p", float, low=0, high=1, option="top_p"),
    Field("max_output_tokens", int, low=1, option="num_predict"),
    Field("text", dict, default={}),
    Field("reasoning", dict, default={}),
    Field("stream", bool, default=False),
    Field("store", bool, default=True),
    Field("previous_response_id", str),
    Field("metadata", dict),
    Field("parallel_tool_calls", bool, default=True),
    Field("user", str),
    Field("truncation", str, default="disabled"),
    Field("include", list, default=[]),
    Field("prompt_cache_key", str),
    Field("safety_identifier", str),
    Field("service_tier", str),
    Field("seed", int, option="seed"),
    Field("top_logprobs", int, low=0, high=20),
    Field("max_tool_calls", int, low=1),
    Field("background", bool, default=False),
    Field("stream_options", dict),
)
OTHER = ("input", "tool_choice")
COUNT_FIELDS: tuple[str, ...] = ("model", "input", "instructions", "tools", "tool_choice", "previous_response_id")
COUNT_FIELDS += ("text", "reasoning", "parallel_tool_calls", "truncation")
SUMMARIES = ("auto", "concise", "detailed")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True)
class Turn:
    """A translated request: the chat to run, the conversation it continues, and the fields echoed back."""

    chat: ChatRequest
    conversation: tuple[ChatMessage, ...]  # without the instructions: what a stored response keeps
    echo: dict[str, Any]
    stream: bool = False
    store: bool = True
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))


# -- translating requests ---------------------------------------------------------------------------------


TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")


def parse_input(raw: Any) -> tuple[ChatMessage, ...]:
    """`input`: a string (one user message), or items: messages (`input_text`/`output_text` parts or a string,
    roles user, system, developer, assistant), `function_call` and `function_call_output` items; `reasoning`
    items are accepted and left out of the prompt."""
    if isinstance(raw, str):
        return (ChatMessage("user", raw),)
    if not isinstance(raw, list):
        raise InvalidRequest("input must be a string or a list of input items", field="input")
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        label = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        kind = item.get("type", "message")
        if kind == "message":
            role = rq.field(item, "role", str, required=True, prefix=f"{label}.")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(
                    f"{label}.role must be one of user, system, developer, assistant", field=f"{label}.role"
                )
            content = block_text(item.get("content"), f"{label}.content", kinds=TEXT_PARTS, noun="text part")
            out.append(ChatMessage("system" if role == "developer" else role, content))
        elif kind == "function_call":
            call_id = rq.field(item, "call_id", str, required=True, prefix=f"{label}.")
            name = rq.field(item, "name", str, required=True, prefix=f"{label}.")
            arguments = _arguments(rq.field(item, "arguments", str, "{}", prefix=f"{label}."), f"{label}.arguments")
            call = ToolCall(call_id, name, arguments)
            if out and out[-1].role == "assistant" and out[-1].tool_calls and not out[-1].content:
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))  # parallel calls: one turn
            else:
                out.append(ChatMessage("assistant", "", (call,)))
        elif kind == "function_call_output":
            call_id = rq.field(item, "call_id", str, required=True, prefix=f"{label}.")
            output = item.get("output")
            text = block_text("" if output is None else output, f"{label}.output", kinds=TEXT_PARTS, noun="text part")
            out.append(ChatMessage("tool", text, tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # the model's earlier reasoning: not part of the next prompt (as chat templates drop it)
        else:
            raise InvalidRequest(
                f"{label}.type '{kind}' is not supported (message, function_call, function_call_output, reasoning)",
                field=f"{label}.type",
            )
    return tuple(out)


def _arguments(text: str, label: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{label} must be a JSON object (as a string)", field=label)
    return value


def parse_tools_flat(raw: list[Any]) -> list[tuple[int, dict[str, Any]]]:
    """Responses' flat function tools (`{"type": "function", "name", "description", "parameters", "strict"}`)
    in the chat shape `tools.parse_tools` reads, each with its index in `tools`. Declarations of other types
    (hosted tools such as `web_search`, Codex's freeform `custom` tools, `namespace`) are not run here: they
    are left out of the prompt, not refused, since agents send them with every request."""
    out = []
    for i, item in enumerate(raw):
        label = f"tools[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise InvalidRequest(f'{label} must be an object with a "type"', field=f"{label}.type")
        if item["type"] != "function":
            log.info("tool %s of type %r left out: only function tools are offered to the model", label, item["type"])
            continue
        for key, kind in (("name", str), ("description", str), ("parameters", dict)):
            rq.field(item, key, kind, required=key == "name", prefix=f"{label}.")
        function = {k: item[k] for k in ("name", "description", "parameters") if item.get(k) is not None}
        out.append((i, {"type": "function", "function": function}))
    return out


def function_tools(raw: list[Any]) -> tuple[Tool, ...]:
    """The function tools, checked by `tools.parse_tools` (its errors named in Responses' flat shape)."""
    flat = parse_tools_flat(raw)
    try:
        return parse_tools([chat for _, chat in flat])
    except InvalidRequest as exc:
        found = re.match(r"tools\[(\d+)\](?:\.function)?", exc.field or "")
        if not found:
            raise
        label = f"tools[{flat[int(found.group(1))][0]}]"
        field = label + (exc.field or "")[found.end() :]
        raise InvalidRequest(str(exc).replace(found.group(0), label), field=field) from None


def _tool_choice(raw: Any) -> Any:
    """Responses' `{"type": "function", "name"}` in the chat shape; strings as they are."""
    if isinstance(raw, dict) and raw.get("type") == "function" and "function" not in raw:
        return {"type": "function", "function": {"name": raw.get("name")}}
    if isinstance(raw, dict) and raw.get("type") in ("none", "auto", "required"):
        return raw["type"]
    return raw


def text_format(text: dict[str, Any]) -> Any:
    """`text.format`: `text` (none), `json_object` ("json"), `json_schema` (its schema: constrained output)."""
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("text.format.schema must be a JSON schema object", field="text.format.schema")
        return schema
    raise InvalidRequest("text.format.type must be text, json_object or json_schema", field="text.format.type")


def to_turn(body: dict[str, Any], store: ResponseStore, *, counting: bool = False) -> Turn:
    """Translate a request (or, `counting`, an `input_tokens` request) onto a chat and what it echoes."""
    if counting:
        check_fields(body, COUNT_FIELDS)
        v = FIELDS.read({k: body[k] for k in body if k in FIELDS.by_name})
    else:
        FIELDS.check(body, also=OTHER)
        v = FIELDS.read(body)
    name = rq.model_name(body)
    if v["background"]:
        raise InvalidRequest("background responses are not supported: leave background false", field="background")
    if v["truncation"] not in ("auto", "disabled"):
        raise InvalidRequest("truncation must be auto or disabled", field="truncation")
    effort = v["reasoning"].get("effort")
    think = thinking.effort(effort, "reasoning.effort")
    summary = v["reasoning"].get("summary")
    if summary is not None and summary not in SUMMARIES:
        raise InvalidRequest(f"reasoning.summary must be one of {', '.join(SUMMARIES)}", field="reasoning.summary")
    earlier: tuple[ChatMessage, ...] = ()
    if v["previous_response_id"] is not None:
        stored = store.get(v["previous_response_id"])
        if stored is None:
            raise RouteError(f"previous response '{v['previous_response_id']}' not found (not stored, or expired)", 404)
        earlier = stored.conversation
    if body.get("input") is None:
        raise InvalidRequest("input is required: a string or a list of input items", field="input")
    conversation = (*earlier, *parse_input(body["input"]))
    tools = function_tools(v["tools"])
    choice = parse_tool_choice(_tool_choice(body.get("tool_choice")), tools)
    fmt = text_format(v["text"])
    schema = call_schema(tools, choice)
    if schema is not None:
        if fmt is not None:
            raise InvalidRequest("a required tool call cannot be combined with text.format", field="tool_choice")
        fmt = schema
    instructions = (ChatMessage("system", v["instructions"]),) if v["instructions"] else ()
    options = as_options(v, FIELDS).merged_over(Options(temperature=1.0, top_p=1.0))
    chat = ChatRequest(
        model=name,
        messages=(*instructions, *conversation),
        options=options,
        constraints=Constraints(format=fmt),
        tools=tools if choice.mode != "none" else (),
        truncate=v["truncation"] == "auto",
        call_required=schema is not None,
        think=think,
        think_field="reasoning.effort",
    )
    echo = {
        "model": body["model"],
        "instructions": v["instructions"],
        "max_output_tokens": v["max_output_tokens"],
        "metadata": v["metadata"] or {},
        "parallel_tool_calls": v["parallel_tool_calls"],
        "previous_response_id": v["previous_response_id"],
        "reasoning": {"effort": effort, "summary": summary},
        "store": v["store"],
        "temperature": options.temperature,
        "text": {"format": v["text"].get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or ("auto" if tools else "none"),
        "tools": v["tools"],
        "top_p": options.top_p,
        "truncation": v["truncation"],
        "user": v["user"],
    }
    return Turn(chat, conversation, echo, stream=v["stream"], store=v["store"])
