"""A GGUF's named chat templates (`tokenizer.chat_template.<name>`): the `tool_use` one when a request has
tools, unless a Modelfile TEMPLATE is set; and what `/api/show` reports as capabilities."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from localllm.domain.names import parse_name
from localllm.domain.options import Options
from localllm.modelstore.gguf import read_info
from localllm.modelstore.models import Model

from ..conftest import model_file
from ..ggufcopy import copy_with_metadata

DATA = Path(__file__).resolve().parent.parent / "data" / "templates"
PLAIN = "{% for m in messages %}{{ m.content }}{% endfor %}"


def _model(path: Path, template: str | None = None) -> Model:
    info = read_info(path)
    stored: Any = type("Stored", (), {"name": parse_name("variants")})()
    own = template is not None
    return Model(
        stored, path, info, template or info.chat_template, None, Options(), own_template=own,
        template_source="the Modelfile TEMPLATE" if own else "the chat template in the GGUF",
    )  # fmt: skip


def test_the_tool_use_variant_serves_requests_with_tools(tmp_path: Path) -> None:
    tool_use = (DATA / "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja").read_text(encoding="utf-8")
    path = copy_with_metadata(
        model_file("stories260K.gguf"),
        tmp_path / "variants.gguf",
        {"tokenizer.chat_template": PLAIN, "tokenizer.chat_template.tool_use": tool_use},
    )
    model = _model(path)
    assert model.info.chat_templates == {"tool_use": tool_use}
    assert model.template_for(tools=False)[0] == PLAIN
    template, label = model.template_for(tools=True)
    assert template == tool_use and "tool_use" in label
    assert "tools" in model.capabilities  # the variant takes tools, though the default template does not
    overridden = _model(path, template="{{ messages[0].content }}")  # a Modelfile TEMPLATE wins
    assert overridden.template_for(tools=True)[0] == "{{ messages[0].content }}"


def test_thinking_is_a_capability_of_templates_that_think(tmp_path: Path) -> None:
    qwen3 = (DATA / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    path = copy_with_metadata(model_file("stories260K.gguf"), tmp_path / "q.gguf", {"tokenizer.chat_template": qwen3})
    assert "thinking" in _model(path).capabilities
    assert "thinking" not in replace(_model(path), template=PLAIN).capabilities
