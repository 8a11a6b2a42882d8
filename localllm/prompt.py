"""Turn messages (or a prompt and a system text) into the text a model continues.

Chat templates are the Jinja2 templates Hugging Face models ship in `tokenizer.chat_template`, rendered
with the usual variables (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `tools`). They are
untrusted code: `chat_render` only prepares a render (`Render`), which the daemon hands to a bounded worker
process (`renderpool.py`, sandbox in `sandbox.py`); `render_chat` renders in this process with the sandbox's
counted bounds (tests, tools). A model without a template gets a plain "Role: text" transcript.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import limits, sandbox
from .errors import InvalidRequest
from .types import ChatMessage, Tool


@dataclass(frozen=True)
class Render:
    """A chat template and the variables to render it with: what a render worker is sent."""

    template: str
    variables: dict[str, Any]
    bos_token: str = ""

    def finish(self, text: str) -> str:
        """The rendered text as the runner takes it: it adds the BOS token itself, so a leading one is cut."""
        if self.bos_token and text.startswith(self.bos_token):
            return text[len(self.bos_token) :]
        return text


def check_template(template: str) -> None:
    """Raise `InvalidRequest` when `template` is not valid Jinja2 (e.g. an Ollama Go template), in-process."""
    reply = sandbox.outcome({"op": "check", "template": template})
    if reply.get("error") == "syntax":
        hint = " (this looks like a Go template; localllm templates are Jinja2)" if "{{ ." in template else ""
        raise InvalidRequest(
            f"invalid chat template at line {reply.get('line')}: {reply.get('message')}{hint}", field="template"
        )
    if "error" in reply:
        raise InvalidRequest(f"invalid chat template: {reply.get('message')}", field="template")


def supports_tools(template: str | None) -> bool:
    """Whether a chat template renders `tools` itself (Hugging Face templates that do mention them)."""
    return bool(template) and "tools" in str(template)


def supports_thinking(template: str | None) -> bool:
    """Whether a chat template is a reasoning model's: it switches thinking (`enable_thinking`), renders
    earlier reasoning (`reasoning_content`) or writes `<think>` itself. The one check of the capability."""
    return bool(template) and any(mark in str(template) for mark in ("enable_thinking", "reasoning_content", "<think>"))


def takes_think_levels(template: str | None) -> bool:
    """Whether a chat template sets how hard the model thinks (`reasoning_effort`: low, medium, high)."""
    return bool(template) and "reasoning_effort" in str(template)


def think_variables(think: bool | str | None) -> dict[str, Any]:
    """The template variables of a request's `think`: `enable_thinking` (Qwen3's switch) when it is set, and
    `reasoning_effort` when it is a level. Nothing when it is not set: the template's own default."""
    if think is None:
        return {}
    if isinstance(think, str):
        return {"enable_thinking": True, "reasoning_effort": think}
    return {"enable_thinking": think}


def chat_render(
    messages: Sequence[ChatMessage],
    *,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Tool] = (),
    think: bool | str | None = None,
) -> Render | str:
    """The render for `messages`, ending where the assistant's answer begins; the prompt itself when there is
    no template.

    `tools` go to a template that supports them as the `tools` variable; for any other template they are
    described in the system message, with the `<tool_call>` format that `tools.parse_tool_calls` reads.
    """
    if tools and not supports_tools(template):
        messages = _with_tool_instructions(messages, tools)
    if not template:
        return _plain(messages)
    variables = {
        "messages": [_message_dict(m) for m in messages],
        "tools": [t.as_dict() for t in tools] or None,
        "add_generation_prompt": True,
        "bos_token": bos_token,
        "eos_token": eos_token,
        **think_variables(think),
    }
    return Render(template, variables, bos_token)


def generate_messages(prompt: str, *, system: str | None) -> list[ChatMessage]:
    """`/api/generate`'s prompt and system text as the messages a chat template takes."""
    return ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]


def render_chat(
    messages: Sequence[ChatMessage],
    *,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Tool] = (),
    max_bytes: int = limits.PROMPT_MAX_BYTES,
    think: bool | str | None = None,
) -> str:
    """`chat_render` rendered in this process (with the sandbox's counted bounds, not time or memory)."""
    job = chat_render(messages, template=template, bos_token=bos_token, eos_token=eos_token, tools=tools, think=think)
    if isinstance(job, str):
        return job
    reply = sandbox.outcome(
        {"op": "render", "template": job.template, "variables": job.variables, "max_bytes": max_bytes}
    )
    if "error" in reply:
        verb = "refused the messages" if reply["error"] == "refused" else "failed"
        raise InvalidRequest(f"the chat template {verb}: {reply.get('message')}", field="messages")
    return job.finish(str(reply["text"]))


def render_generate(
    prompt: str, *, system: str | None, template: str | None, bos_token: str = "", eos_token: str = ""
) -> str:
    """The prompt for `/api/generate`: through the chat template when the model has one, else as given."""
    if not template:
        return f"{system}\n\n{prompt}" if system else prompt
    messages = generate_messages(prompt, system=system)
    return render_chat(messages, template=template, bos_token=bos_token, eos_token=eos_token)


def _message_dict(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.thinking:
        out["reasoning_content"] = m.thinking  # an earlier answer's reasoning, as Qwen3's template reads it
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
