"""Turn messages (or a prompt and a system text) into the text a model continues.

Chat templates are the Jinja2 templates Hugging Face models ship in `tokenizer.chat_template`, rendered
in a sandbox with the usual variables (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`).
A model without one gets a plain "Role: text" transcript.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import jinja2
import jinja2.sandbox

from .errors import InvalidRequest
from .types import ChatMessage


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


def render_chat(
    messages: Sequence[ChatMessage],
    *,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """The prompt for `messages`, ending where the assistant's answer begins."""
    if not template:
        return _plain(messages)
    try:
        text = _ENV.from_string(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
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


def _plain(messages: Sequence[ChatMessage]) -> str:
    lines = []
    for m in messages:
        if m.role == "system":
            lines.append(f"{m.content}\n")
        else:
            lines.append(f"{m.role.capitalize()}: {m.content}")
    lines.append("Assistant:")
    return "\n".join(lines)
