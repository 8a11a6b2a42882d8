"""Turn messages (or a prompt and a system text) into the text a model continues.

Chat templates are the Jinja2 templates Hugging Face models ship in `tokenizer.chat_template`, rendered
in a sandbox with the usual variables (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`).
A model without one gets a plain "Role: text" transcript.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import jinja2
import jinja2.sandbox

from .errors import InvalidRequest
from .types import ChatMessage, Tool


def _raise(message: str) -> None:
    raise InvalidRequest(f"the chat template refused the messages: {message}", field="messages")


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _environment() -> jinja2.Environment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


_ENV = _environment()


def check_template(template: str) -> None:
    """Raise `InvalidRequest` when `template` is not valid Jinja2 (e.g. an Ollama Go template)."""
    try:
        _ENV.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        hint = " (this looks like a Go template; localllm templates are Jinja2)" if "{{ ." in template else ""
        raise InvalidRequest(
            f"invalid chat template at line {exc.lineno}: {exc.message}{hint}", field="template"
        ) from None


def supports_tools(template: str | None) -> bool:
    """Whether a chat template renders `tools` itself (Hugging Face templates that do mention them)."""
    return bool(template) and "tools" in str(template)


def render_chat(
    messages: Sequence[ChatMessage],
    *,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Tool] = (),
) -> str:
    """The prompt for `messages`, ending where the assistant's answer begins.

    `tools` go to a template that supports them as the `tools` variable; for any other template they are
    described in the system message, with the `<tool_call>` format that `tools.parse_tool_calls` reads.
    """
    if tools and not supports_tools(template):
        messages = _with_tool_instructions(messages, tools)
    if not template:
        return _plain(messages)
    try:
        text = _ENV.from_string(template).render(
            messages=[_message_dict(m) for m in messages],
            tools=[t.as_dict() for t in tools] or None,
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except jinja2.TemplateError as exc:
        raise InvalidRequest(f"the model's chat template failed: {exc}", field="messages") from None
    # The runner adds the BOS token itself; a template that writes it too would double it.
    if bos_token and text.startswith(bos_token):
        text = text[len(bos_token) :]
    return text


def render_generate(
    prompt: str, *, system: str | None, template: str | None, bos_token: str = "", eos_token: str = ""
) -> str:
    """The prompt for `/api/generate`: through the chat template when the model has one, else as given."""
    if not template:
        return f"{system}\n\n{prompt}" if system else prompt
    messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
    return render_chat(messages, template=template, bos_token=bos_token, eos_token=eos_token)


def _message_dict(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [c.as_dict() for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _with_tool_instructions(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> list[ChatMessage]:
    described = "\n".join(json.dumps(t.as_dict(), ensure_ascii=False) for t in tools)
    note = (
        "You may call these functions:\n"
        f"{described}\n"
        "To call one, answer only with <tool_call>"
        '{"name": <function name>, "arguments": <arguments object>}</tool_call>.'
    )
    out = list(messages)
    if out and out[0].role == "system":
        out[0] = replace(out[0], content=f"{out[0].content}\n\n{note}")
    else:
        out.insert(0, ChatMessage("system", note))
    return out


def _plain(messages: Sequence[ChatMessage]) -> str:
    lines = []
    for m in messages:
        content = m.content
        for call in m.tool_calls:
            content += "<tool_call>" + json.dumps({"name": call.name, "arguments": call.arguments}) + "</tool_call>"
        if m.role == "system":
            lines.append(f"{content}\n")
        else:
            lines.append(f"{m.role.capitalize()}: {content}")
    lines.append("Assistant:")
    return "\n".join(lines)
