"""Translate Responses wire models (`wire.py`) onto a chat (`Turn`): pure functions; what the models cannot say
(which fields an input item's type needs, JSON in strings, tool names, stored conversations) is a 400 (or a
404) naming the field here."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ....chat import thinking
from ....chat.tools import call_schema, parse_tool_choice, parse_tools
from ....domain import mediacheck, parts
from ....domain.errors import InvalidRequest
from ....domain.media import Media
from ....domain.messages import ChatMessage, Tool, ToolCall
from ....domain.options import Constraints, Options
from ....service.generation import ChatRequest
from ....service.responses_store import ResponseStore
from ... import requests as rq
from ...errors import RouteError
from ...wire import as_model
from . import wire

log = logging.getLogger("localllm.server")


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


def _content(content: wire.Content | None, label: str) -> tuple[str, tuple[Media, ...]]:
    """A message's (or an output's) content: a string, or its parts (text, `input_image`, `input_audio`)
    joined by `domain.parts`; a file part is refused by name."""
    if content is None or isinstance(content, str):
        return parts.text_part(content or "", label), ()
    out: list[parts.Part] = []
    for i, part in enumerate(content):
        where = f"{label}[{i}]"
        if isinstance(part, wire.InputImage):
            if part.image_url is None:
                what = "file_id is not supported here (there is no file store)" if part.file_id else "is required"
                raise InvalidRequest(
                    f"{where}.image_url {what}: send the image as a data URL", field=f"{where}.image_url"
                )
            out.append(mediacheck.from_url(part.image_url, where))
        elif isinstance(part, wire.InputAudio):
            data = mediacheck.decode_base64(part.input_audio.data, where, kind="audio")
            out.append(Media("audio", data, where))
        elif isinstance(part, wire.InputFile):
            raise InvalidRequest(f"{where}: 'input_file' parts are not supported here", field=where)
        else:
            text = part.refusal or part.text if isinstance(part, wire.Refusal) else part.text
            out.append(parts.text_part(text, where))
    return parts.join(out)


ITEMS = (
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "local_shell_call",
    "local_shell_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
)
HOSTED = {  # the calls of hosted tools, which are not run here: refused by name
    "web_search_call": "web search",
    "file_search_call": "file search",
    "computer_call": "computer use",
    "computer_call_output": "computer use",
    "image_generation_call": "image generation",
    "code_interpreter_call": "the code interpreter",
    "mcp_call": "remote MCP servers",
    "mcp_list_tools": "remote MCP servers",
    "mcp_approval_request": "remote MCP servers",
    "mcp_approval_response": "remote MCP servers",
}


def parse_input(raw: str | Sequence[wire.InputItem]) -> tuple[ChatMessage, ...]:
    """`input`: a string (one user message), or items: messages (`input_text`/`output_text` parts or a string,
    roles user, system, developer, assistant), the calls (`function_call`, and Codex's `local_shell_call` and
    `custom_tool_call`: an assistant turn's tool calls) and their outputs (tool turns); `reasoning` items
    (with their `encrypted_content`) are accepted and left out of the prompt; hosted tools' calls are refused
    by name."""
    if isinstance(raw, str):
        return (ChatMessage("user", raw),)
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        label = f"input[{i}]"
        if item.type == "message":
            if item.role is None:
                raise InvalidRequest(f"{label}.role is required", field=f"{label}.role")
            content, media = _content(item.content, f"{label}.content")
            out.append(ChatMessage("system" if item.role == "developer" else item.role, content, media=media))
        elif item.type in ("function_call", "custom_tool_call", "local_shell_call"):
            call = _call(item, label)
            if out and out[-1].role == "assistant" and out[-1].tool_calls and not out[-1].content:
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))  # parallel calls: one turn
            else:
                out.append(ChatMessage("assistant", "", (call,)))
        elif item.type in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            shell = item.type == "local_shell_call_output"
            call_id = _required(item.call_id or (item.id if shell else None), f"{label}.call_id")
            output, media = _content(item.output, f"{label}.output")
            out.append(ChatMessage("tool", output, tool_call_id=call_id, media=media))
        elif item.type in HOSTED:
            raise InvalidRequest(
                f"{label}: '{item.type}' items are not supported here ({HOSTED[item.type]} is not available)",
                field=f"{label}.type",
            )
        elif item.type != "reasoning":  # reasoning: not part of the next prompt (as chat templates drop it)
            raise InvalidRequest(f"{label}.type must be one of {', '.join(ITEMS)}", field=f"{label}.type")
    return tuple(out)


def _call(item: wire.InputItem, label: str) -> ToolCall:
    """A replayed call as a tool call: a function's arguments, a custom tool's `input` (as `{"input": ...}`),
    a local shell call's `action` (under the name `local_shell`)."""
    call_id = _required(item.call_id, f"{label}.call_id")
    if item.type == "local_shell_call":
        return ToolCall(call_id, "local_shell", item.action or {})
    name = _required(item.name, f"{label}.name")
    if item.type == "custom_tool_call":
        return ToolCall(call_id, name, {"input": item.input or ""})
    return ToolCall(call_id, name, _arguments(item.arguments, f"{label}.arguments"))


def _required(value: str | None, label: str) -> str:
    if value is None:
        raise InvalidRequest(f"{label} is required", field=label)
    return value


def _arguments(text: str, label: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except (ValueError, RecursionError):
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


def text_format(text: wire.TextConfig | None) -> Any:
    """`text.format`: `text` (none), `json_object` ("json"), `json_schema` (its schema: constrained output)."""
    fmt = text.format if text is not None else None
    if isinstance(fmt, wire.ResponsesJsonObject):
        return "json"
    if isinstance(fmt, wire.ResponsesJsonSchema):
        return fmt.schema
    return None


def to_turn(raw: wire.InputTokensRequest | dict[str, Any], store: ResponseStore, *, counting: bool = False) -> Turn:
    """Translate a request (or, `counting`, an `input_tokens` request) onto a chat and what it echoes."""
    body = as_model(raw, wire.InputTokensRequest if counting else wire.ResponsesRequest)
    full = body if isinstance(body, wire.ResponsesRequest) else wire.ResponsesRequest()
    name = rq.name_of(body.model)
    if full.background:
        raise InvalidRequest("background responses are not supported: leave background false", field="background")
    reasoning = body.reasoning or wire.Reasoning()
    think = thinking.effort(reasoning.effort, "reasoning.effort")
    earlier: tuple[ChatMessage, ...] = ()
    if body.previous_response_id is not None:
        stored = store.get(body.previous_response_id)
        if stored is None:
            raise RouteError(f"previous response '{body.previous_response_id}' not found (not stored, or expired)", 404)
        earlier = stored.conversation
    if body.input is None:
        raise InvalidRequest("input is required: a string or a list of input items", field="input")
    conversation = (*earlier, *parse_input(body.input))
    tools = function_tools(body.tools)
    choice = parse_tool_choice(_tool_choice(body.tool_choice), tools)
    fmt = text_format(body.text)
    schema = call_schema(tools, choice)
    if schema is not None:
        if fmt is not None:
            raise InvalidRequest("a required tool call cannot be combined with text.format", field="tool_choice")
        fmt = schema
    instructions = (
        (ChatMessage("system", parts.text_part(body.instructions, "instructions")),) if body.instructions else ()
    )
    options = Options(
        temperature=full.temperature, top_p=full.top_p, num_predict=full.max_output_tokens, seed=full.seed
    ).merged_over(Options(temperature=1.0, top_p=1.0))
    chat = ChatRequest(
        model=name,
        messages=(*instructions, *conversation),
        options=options,
        constraints=Constraints(format=fmt),
        tools=tools if choice.mode != "none" else (),
        truncate=body.truncation == "auto",
        call_required=schema is not None,
        think=think,
        think_field="reasoning.effort",
    )
    text_format_sent = body.text.format if body.text is not None else None
    echo = {
        "model": body.model,
        "instructions": body.instructions,
        "max_output_tokens": full.max_output_tokens,
        "metadata": full.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary},
        "store": full.store,
        "temperature": options.temperature,
        "text": {"format": msgspec.to_builtins(text_format_sent) if text_format_sent else {"type": "text"}},
        "tool_choice": body.tool_choice or ("auto" if tools else "none"),
        "tools": body.tools,
        "top_p": options.top_p,
        "truncation": body.truncation,
        "user": full.user,
    }
    return Turn(chat, conversation, echo, stream=full.stream, store=full.store)
