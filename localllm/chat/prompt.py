"""Turn messages (or a prompt and a system text) into the text a model continues.

Chat templates are the Jinja2 templates Hugging Face models ship in `tokenizer.chat_template`, rendered
with the usual variables (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `tools`). They are
untrusted code: `chat_render` only prepares a render (`Render`), which `service/templates.py` hands to a
renderer (the daemon's bounded worker processes, `renderpool.py`; the sandbox is `sandbox.py`). A model without a
template gets a plain "Role: text" transcript.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..domain.errors import InvalidRequest
from ..domain.messages import ChatMessage, Tool
from . import sandbox, templatecaps
from .templatecaps import TemplateCaps


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
    """A guess from the template's text alone whether it renders `tools` (`templatecaps.probe` knows)."""
    return bool(template) and "tools" in str(template)


def guessed_caps(template: str) -> TemplateCaps:
    """The capabilities assumed where a template was not probed (an unprobed render, in-process)."""
    tools = supports_tools(template)
    return TemplateCaps(tools=tools, tool_calls=tools, tool_responses=tools, thinking=templatecaps.thinking(template))


def supports_thinking(template: str | None) -> bool:
    """Whether a chat template is a reasoning model's: it switches thinking (`enable_thinking`), renders
    earlier reasoning (`reasoning_content`) or writes `<think>` itself. The one check of the capability."""
    return bool(template) and templatecaps.thinking(str(template))


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
    caps: TemplateCaps | None = None,
    extra: Mapping[str, Any] | None = None,
    think: bool | str | None = None,
) -> Render | str:
    """The render for `messages`, ending where the assistant's answer begins; the prompt itself when there is
    no template.

    The messages are adapted to what the template can take (`caps`, from `templatecaps.probe`): a system text
    it refuses goes into the first user turn; tools, calls and results it cannot show are written as text
    (`tools` described in the system message, with the `<tool_call>` format `tools.parse_tool_calls` reads);
    call ids take the shape it demands, arguments the type it wants; consecutive same-role turns are merged
    where it enforces alternation. `tools` is left undefined when there are none. `enable_thinking` is true
    unless `think` (or `extra`) says otherwise, as llama-server passes it: a template written `{% if not
    enable_thinking %}` thinks by default. `extra` variables are passed to the template as they are.
    """
    if not template:
        return _plain(_with_tool_instructions(messages, tools) if tools else messages)
    caps = caps or guessed_caps(template)
    if tools and not caps.tools:
        messages = _with_tool_instructions(messages, tools)
    variables: dict[str, Any] = {
        "enable_thinking": True,  # as llama-server: thinking on unless the request (or `extra`) turns it off
        **(extra or {}),
        "messages": adapt(messages, caps),
        "add_generation_prompt": True,
        "bos_token": bos_token,
        "eos_token": eos_token,
        **think_variables(think),
    }
    if tools and caps.tools:
        variables["tools"] = [t.as_dict() for t in tools]
    if caps.functions_text:
        variables["functions"] = templatecaps.functions_text(variables.get("tools", []))
    if caps.datetime_text:
        variables["datetime"] = templatecaps.datetime_text()
    return Render(template, variables, bos_token)


def adapt(messages: Sequence[ChatMessage], caps: TemplateCaps) -> list[dict[str, Any]]:
    """`messages` as template variables, with the polyfills `caps` call for (see `chat_render`)."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    system: list[str] = []  # system texts waiting for the next user turn (a template without a system role)
    pending: list[str] = []  # the last assistant turn's calls not answered yet
    for m in messages:
        if m.tool_calls:
            pending = [c.id for c in m.tool_calls]
        elif m.role == "tool":
            if m.tool_call_id is None and pending:  # Ollama's tool messages name no call: the next one open
                m = replace(m, tool_call_id=pending[0])
            if m.tool_call_id in pending:
                pending.remove(m.tool_call_id)
        if m.role == "system" and not caps.system:
            system.append(m.content)
            continue
        item = _message_dict(m, caps, names)
        if item["role"] == "user" and system:
            item["content"] = "\n".join([*system, item["content"]])
            system = []
        if caps.alternates and out and _mergeable(out[-1], item):
            out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n{item['content']}"}
            continue
        out.append(item)
    if system:  # nothing followed the system text: it is a user turn of its own
        out.append({"role": "user", "content": "\n".join(system)})
    return out


def short_call_id(call_id: str) -> str:
    """A call id as Mistral templates demand it (9 alphanumerics): kept when it is one, else derived from it
    (the same for the call and its result)."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    digest = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    return "".join(_ALNUM[(digest >> (6 * i)) % len(_ALNUM)] for i in range(9))


_ALNUM = string.ascii_letters + string.digits


def _mergeable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["role"] == b["role"] and a["role"] in ("user", "assistant") and "tool_calls" not in a | b


def _message_dict(m: ChatMessage, caps: TemplateCaps, names: Mapping[str, str]) -> dict[str, Any]:
    ident = short_call_id if caps.short_call_ids else str
    content = m.content
    if m.role == "tool" and not caps.tool_responses:
        return {"role": "user", "content": f"<tool_response>{content}</tool_response>"}
    out: dict[str, Any] = {"role": m.role, "content": content}
    if m.thinking:
        out["reasoning_content"] = m.thinking  # an earlier answer's reasoning, as Qwen3's template reads it
    calls = m.tool_calls
    if calls and (not caps.tool_calls or (len(calls) > 1 and not caps.parallel_calls)):
        text = "".join(
            "<tool_call>" + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False) + "</tool_call>"
            for c in calls
        )
        out["content"] = f"{content}\n{text}" if content else text
    elif calls:
        out["tool_calls"] = []
        for c in calls:
            arguments: Any = c.arguments if caps.object_arguments else json.dumps(c.arguments, ensure_ascii=False)
            function = {"name": c.name, "arguments": arguments}
            out["tool_calls"].append({"id": ident(c.id), "type": "function", "function": function})
    if m.tool_call_id is not None:
        out["tool_call_id"] = ident(m.tool_call_id)
        if m.tool_call_id in names:
            out["name"] = names[m.tool_call_id]
    return out


def generate_messages(prompt: str, *, system: str | None) -> list[ChatMessage]:
    """`/api/generate`'s prompt and system text as the messages a chat template takes."""
    return ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]


def render_generate(prompt: str, *, system: str | None) -> str:
    """The prompt for `/api/generate` on a model without a chat template: the system text, then the prompt."""
    return f"{system}\n\n{prompt}" if system else prompt


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


PLAIN_STOPS = ("\nUser:", "\nSystem:", "\nTool:")  # the turns `_plain` writes: an answer ends at the next one


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
