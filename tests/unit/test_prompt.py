from __future__ import annotations

from pathlib import Path

import pytest

from localllm.chat.prompt import check_template, generate_messages, render_generate
from localllm.domain.errors import InvalidRequest
from localllm.domain.messages import ChatMessage

from ..fakes import render_chat

TEMPLATES = Path(__file__).parent.parent / "data" / "templates"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_template_rendering() -> None:
    text = render_chat([ChatMessage("system", "be brief"), ChatMessage("user", "hi")], template=CHATML)
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_leading_bos_is_left_to_the_tokenizer() -> None:
    text = render_chat(
        [ChatMessage("user", "hi")], template="{{ bos_token }}{{ messages[0].content }}", bos_token="<s>"
    )
    assert text == "hi"


def test_fallback_transcript() -> None:
    text = render_chat(
        [ChatMessage("system", "S"), ChatMessage("user", "U"), ChatMessage("assistant", "A"), ChatMessage("user", "V")],
        template=None,
    )
    assert text == "S\n\nUser: U\nAssistant: A\nUser: V\nAssistant:"


def test_generate_without_template_is_the_prompt() -> None:
    assert render_generate("Once upon a time", system=None) == "Once upon a time"
    assert render_chat(generate_messages("go", system="sys"), template=CHATML).startswith("<|im_start|>system\nsys")


def test_template_errors_are_400s() -> None:
    with pytest.raises(InvalidRequest, match="refused"):
        render_chat([ChatMessage("user", "x")], template="{{ raise_exception('no users') }}")
    with pytest.raises(InvalidRequest, match="Go template"):
        check_template("{{ .Prompt }}{{ if .System }}")


def test_templates_are_sandboxed() -> None:
    with pytest.raises(InvalidRequest):
        render_chat([ChatMessage("user", "x")], template="{{ messages.__class__.__mro__[1].__subclasses__() }}")


def test_templates_render_with_thinking_on_unless_told_otherwise() -> None:
    """As llama-server: `enable_thinking` is true when the request says nothing, so the R1 distill's
    `{% if not enable_thinking %}` leaves the thinking open."""
    text = (TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text()
    user = [ChatMessage("user", "Hi")]
    unset, on, off = (render_chat(user, template=text, think=t) for t in (None, True, False))
    assert unset == on and unset.endswith("<think>\n") and off.endswith("</think>")
    kept = render_chat(user, template=text, extra={"enable_thinking": False})
    assert kept == off
