"""Translate Anthropic's Messages wire models (`wire.py`) onto the service's chat requests: pure functions;
what the models cannot say (which block a turn may hold, server tools, a budget under max_tokens) is an
`InvalidRequest` naming the field here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ....chat.thinking import Think
from ....chat.tools import ToolChoice, call_schema, tool_name
from ....domain import mediacheck, parts
from ....domain.errors import InvalidRequest
from ....domain.media import Media
from ....domain.messages import ChatMessage, Tool, ToolCall
from ....domain.options import Constraints, Options, parse_stop
from ....service.generation import ChatRequest
from ... import requests as rq
from ...wire import as_model
from . import wire


@dataclass(frozen=True)
class Parsed:
    """A Messages request: the chat request (with its thinking and budget) and whether it streams."""

    chat: ChatRequest
    stream: bool = False


def parse(raw: wire.MessagesRequest | dict[str, Any]) -> Parsed:
    """Translate `POST /v1/messages`."""
    body = as_model(raw, wire.MessagesRequest)
    stop = parse_stop(body.stop_sequences, "stop_sequences") if body.stop_sequences is not None else None
    options = Options(
        num_predict=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, stop=stop
    )
    chat = _chat(body, options, body.max_tokens)
    fmt = body.output_config.format.schema if body.output_config and body.output_config.format else None
    if fmt is not None:
        if chat.call_required:
            raise InvalidRequest(
                "a forced tool_choice cannot be combined with output_config.format", field="tool_choice"
            )
        chat = replace(chat, constraints=replace(chat.constraints, format=fmt))
    return Parsed(replace(chat, count_prompt=body.stream), body.stream)  # message_start says the input tokens


def parse_count(raw: wire.CountTokensRequest | dict[str, Any]) -> ChatRequest:
    """Translate `POST /v1/messages/count_tokens`: the same prompt, no sampling."""
    return _chat(as_model(raw, wire.CountTokensRequest), Options(), None)


def _chat(body: wire.CountTokensRequest, options: Options, max_tokens: int | None) -> ChatRequest:
    name = rq.name_of(body.model)
    _context_management(body.context_management)
    think, budget = _thinking(body.thinking, max_tokens)
    tools = _tools(body.tools)
    choice = _tool_choice(body.tool_choice, tools)
    schema = call_schema(tools, choice)
    return ChatRequest(
        model=name,
        messages=(*_system(body.system), *_messages(body.messages)),
        options=options,
        constraints=Constraints(format=schema),
        tools=tools if choice.mode != "none" else (),
        call_required=schema is not None,
        think=think,
        think_budget=budget,
    )


def _context_management(raw: wire.ContextManagement | None) -> None:
    """Claude Code's `context_management` beta: clearing earlier thinking is what happens here anyway (earlier
    turns' thinking is never part of the prompt), so `clear_thinking_*` edits are accepted; any other edit
    (clearing tool uses) would change the prompt and is not done here: refused, naming it."""
    for i, edit in enumerate(raw.edits if raw else ()):
        if not edit.type.startswith("clear_thinking"):
            label = f"context_management.edits[{i}].type"
            raise InvalidRequest(
                f"{label}: the context edit '{edit.type}' is not supported here (only clear_thinking_*)", field=label
            )


def _texts(blocks: list[wire.Block] | list[wire.ResultBlock], label: str, sep: str) -> str:
    """The text of text blocks (a system prompt's); any other block is refused naming it."""
    texts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, wire.TextBlock):
            kind = block.__struct_config__.tag
            raise InvalidRequest(
                f"{label}[{i}] must be a text block: '{kind}' blocks are not supported here (system text only)",
                field=f"{label}[{i}]",
            )
        texts.append(parts.text_part(block.text, f"{label}[{i}].text"))
    return sep.join(texts)


def _image(block: wire.ImageBlock, where: str) -> Media:
    """An image block: its base64 `source`, or a `url` one (fetched where the operator allows it)."""
    source = block.source
    if isinstance(source, wire.URLSource):
        return mediacheck.from_url(source.url, where)
    return Media("image", mediacheck.decode_base64(source.data, f"{where}.source.data", kind="image"), where)


def _result(content: str | list[wire.ResultBlock], label: str) -> tuple[str, tuple[Media, ...]]:
    """A tool result's content: text, or text and image blocks (`domain.parts`); documents refused by name."""
    if isinstance(content, str):
        return parts.text_part(content, label), ()
    out: list[parts.Part] = []
    for i, block in enumerate(content):
        where = f"{label}[{i}]"
        if isinstance(block, wire.TextBlock):
            out.append(parts.text_part(block.text, f"{where}.text"))
        elif isinstance(block, wire.ImageBlock):
            out.append(_image(block, where))
        else:
            raise InvalidRequest(f"{where}: document blocks are not supported (the models here read text)", field=where)
    return parts.join(out)


def _system(raw: wire.Content | None) -> tuple[ChatMessage, ...]:
    if raw is None:
        return ()
    text = parts.text_part(raw, "system") if isinstance(raw, str) else _texts(raw, "system", "\n")
    return (ChatMessage("system", text),) if text else ()


def _messages(raw: list[wire.AnthropicMessage]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        if item.role == "system":  # a system turn where it was sent; `prompt.adapt` folds it if need be
            label = f"messages[{i}].content"
            text = (
                parts.text_part(item.content, label)
                if isinstance(item.content, str)
                else _texts(item.content, label, "\n")
            )
            out.append(ChatMessage("system", text))
        elif isinstance(item.content, str):
            out.append(ChatMessage(item.role, parts.text_part(item.content, f"messages[{i}].content")))
        else:
            out += _blocks(item.role, item.content, f"messages[{i}].content")
    return out


def _blocks(role: str, blocks: list[wire.Block], label: str) -> list[ChatMessage]:
    """One turn's blocks as chat messages: a user turn's tool results become tool messages (before its text),
    an assistant turn's `tool_use` blocks its tool calls; `thinking` blocks are dropped."""
    texts: list[parts.Part] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for j, block in enumerate(blocks):
        where = f"{label}[{j}]"
        kind = block.__struct_config__.tag
        if isinstance(block, wire.TextBlock):
            texts.append(parts.text_part(block.text, f"{where}.text"))
        elif isinstance(block, wire.ImageBlock) and role == "user":
            texts.append(_image(block, where))
        elif isinstance(block, (wire.ThinkingBlock, wire.RedactedThinkingBlock)) and role == "assistant":
            continue  # an earlier turn's reasoning is not part of the prompt (as Anthropic's API does)
        elif isinstance(block, wire.ToolUseBlock) and role == "assistant":
            name = tool_name(block.name, f"{where}.name")
            if block.id is None:
                raise InvalidRequest(f"{where}.id is required", field=f"{where}.id")
            calls.append(ToolCall(block.id, name, block.input or {}))
        elif isinstance(block, wire.ToolResultBlock) and role == "user":
            text, media = _result(block.content or "", f"{where}.content")
            if block.is_error:
                text = f"Error: {text}"
            results.append(ChatMessage("tool", text, tool_call_id=block.tool_use_id, media=media))
        elif isinstance(block, wire.DocumentBlock):
            raise InvalidRequest(f"{where}: {kind} blocks are not supported (the models here read text)", field=where)
        else:
            raise InvalidRequest(f"{where}: a {role} turn cannot hold a '{kind}' block here", field=where)
    text, media = parts.join(texts)
    if role == "assistant":
        return [ChatMessage("assistant", text, tuple(calls))] if text or calls else []
    return [*results, *([ChatMessage("user", text, media=media)] if text or not results else [])]


def _tools(raw: list[wire.AnthropicTool] | None) -> tuple[Tool, ...]:
    """Custom tools (`name`, `description`, `input_schema`); Anthropic's server tools are refused."""
    tools: list[Tool] = []
    for i, item in enumerate(raw or ()):
        label = f"tools[{i}]"
        if item.type != "custom":
            raise InvalidRequest(
                f"{label}: server tools (type '{item.type}') are not supported, only custom tools", field=label
            )
        name = tool_name(item.name, f"{label}.name")
        if item.input_schema is None:
            raise InvalidRequest(f"{label}.input_schema is required", field=f"{label}.input_schema")
        if any(t.name == name for t in tools):
            raise InvalidRequest(f"{label}: tool '{name}' is declared twice", field=f"{label}.name")
        tools.append(Tool(name, item.description, item.input_schema))
    return tuple(tools)


CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(raw: wire.AnthropicToolChoice | None, tools: tuple[Tool, ...]) -> ToolChoice:
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    kind = raw.type
    if kind in ("any", "tool") and not tools:
        raise InvalidRequest(f'tool_choice "{kind}" needs tools', field="tool_choice")
    if kind != "tool":
        return ToolChoice(CHOICES[kind])
    name = raw.name
    if name is None:
        raise InvalidRequest("tool_choice.name is required", field="tool_choice.name")
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names '{name}', which is not among the tools", field="tool_choice.name")
    return ToolChoice("named", name)


def _thinking(raw: wire.ThinkingConfig | None, max_tokens: int | None) -> tuple[Think, int | None]:
    """`thinking` as a `think` and a budget: `enabled` thinks (where the model can) within `budget_tokens`
    (checked as Anthropic does, but from 1 token rather than 1024), `disabled` turns thinking off, `adaptive`
    (or nothing) leaves it to the model's template."""
    if raw is None or raw.type == "adaptive":
        return None, None
    if raw.type == "disabled":
        return False, None
    budget = raw.budget_tokens
    if budget is None:
        raise InvalidRequest("thinking.budget_tokens is required", field="thinking.budget_tokens")
    if budget < 1 or (max_tokens is not None and budget >= max_tokens):
        raise InvalidRequest(
            f"thinking.budget_tokens must be at least 1 and less than max_tokens, got {budget}",
            field="thinking.budget_tokens",
        )
    return None, budget
