"""Every real chat template in tests/data/templates (llama.cpp's models/templates, see its README) renders an
ordinary chat and a tool round trip with no error and no message text lost, ending where the answer begins;
and llama.cpp's expected renderings (test-chat-template.cpp) come out the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localllm.chat import prompt, sandbox
from localllm.chat.templatecaps import TemplateCaps
from localllm.domain.errors import InvalidRequest
from localllm.domain.messages import ChatMessage, Tool, ToolCall

from ..fakes import render_chat

DATA = Path(__file__).resolve().parent.parent / "data" / "templates"
TEMPLATES = sorted(DATA.glob("*.jinja"))
EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))

CHAT = [
    ChatMessage("system", "You are SystemTextAlpha."),
    ChatMessage("user", "UserTextBravo?"),
    ChatMessage("assistant", "AssistantTextCharlie."),
    ChatMessage("user", "UserTextDelta?"),
]
WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
CALL = ToolCall("call_0123456789abcdef01234567", "get_weather", {"city": "CityEcho"})
TOOL_CHAT = [
    ChatMessage("user", "UserTextFoxtrot?"),
    ChatMessage("assistant", "", (CALL,)),
    ChatMessage("tool", '{"temperature": "TempGolf"}', tool_call_id=CALL.id),
]


def _render(template: str, messages: list[ChatMessage], tools: tuple[Tool, ...] = ()) -> str:
    return render_chat(messages, template=template, tools=tools, bos_token="<s>", eos_token="</s>")


def _ends_at_answer(text: str, template: str) -> None:
    """The prompt ends where the answer begins: not with a closed turn of the last message."""
    tail = text.rstrip()[-40:]
    assert not tail.endswith(('TempGolf"}', "UserTextDelta?")), f"no generation prompt: …{tail!r}"


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_a_chat_with_a_system_message_loses_nothing(path: Path) -> None:
    template = path.read_text(encoding="utf-8")
    text = _render(template, CHAT)
    for needle in ("SystemTextAlpha", "UserTextBravo", "AssistantTextCharlie", "UserTextDelta"):
        assert needle in text, f"{needle} lost in {text!r}"
    _ends_at_answer(text, template)


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_a_tool_round_trip_loses_nothing(path: Path) -> None:
    template = path.read_text(encoding="utf-8")
    text = _render(template, TOOL_CHAT, (WEATHER,))
    for needle in ("get_weather", "The weather in a city", "UserTextFoxtrot", "CityEcho", "TempGolf"):
        assert needle in text, f"{needle} lost in {text!r}"
    assert text.index("UserTextFoxtrot") < text.rindex("CityEcho") < text.rindex("TempGolf")
    _ends_at_answer(text, template)


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=[c["name"] for c in EXPECTED["cases"]])
def test_llama_cpp_expected_renderings(case: dict[str, str]) -> None:
    messages = [ChatMessage(role, content) for role, content in EXPECTED["conversation"]]
    text = render_chat(messages, template=case["template"], bos_token=case["bos_token"], eos_token=case["eos_token"])
    expected = case["expected"]
    if case["bos_token"] and expected.startswith(case["bos_token"]):  # the runner adds BOS: the render drops it
        expected = expected[len(case["bos_token"]) :]
    assert text == expected


def test_probed_capabilities_of_known_templates() -> None:
    def caps(name: str) -> TemplateCaps:
        return sandbox.probe((DATA / name).read_text(encoding="utf-8"))

    gemma = caps("google-gemma-2-2b-it.jinja")
    assert not gemma.system and gemma.alternates and not gemma.tools
    nemo = caps("mistralai-Mistral-Nemo-Instruct-2407.jinja")
    assert nemo.short_call_ids and nemo.tools and nemo.tool_calls and nemo.tool_responses
    assert caps("Qwen-Qwen3-0.6B.jinja").thinking and not caps("Qwen-Qwen2.5-7B-Instruct.jinja").thinking
    assert not caps("meetkai-functionary-medium-v3.2.jinja").object_arguments  # arguments as a JSON string
    hermes = caps("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja")
    assert hermes.tools and hermes.parallel_calls and hermes.system


def test_mistral_call_ids_are_nine_alphanumerics_and_match() -> None:
    template = (DATA / "mistralai-Mistral-Nemo-Instruct-2407.jinja").read_text(encoding="utf-8")
    text = _render(template, TOOL_CHAT, (WEATHER,))
    short = prompt.short_call_id(CALL.id)
    assert len(short) == 9 and short.isalnum()
    assert text.count(short) == 2  # the call and its result


def test_tools_stay_undefined_without_tools() -> None:
    template = "{% if tools is defined %}TOOLS{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert "TOOLS" not in _render(template, [ChatMessage("user", "hi")])


def test_a_tool_message_without_an_id_answers_the_open_call() -> None:
    """Ollama's tool messages carry no call id; a template that demands ids gets the open call's."""
    template = (DATA / "mistralai-Mistral-Nemo-Instruct-2407.jinja").read_text(encoding="utf-8")
    messages = [*TOOL_CHAT[:2], ChatMessage("tool", "TempGolf")]
    text = _render(template, messages, (WEATHER,))
    assert text.count(prompt.short_call_id(CALL.id)) == 2 and "TempGolf" in text


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ (messages | map(attribute='role')) | tojson }}", '["user"]'),  # a generator
        ("{{ {'b': 1, 'a': [2]} | tojson(sort_keys=true, separators=(',', ':')) }}", '{"a":[2],"b":1}'),
        ("{{ {'k': 'é'} | tojson(indent=2) }}", '{\n  "k": "é"\n}'),
        ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "1"),
        ("{% for m in messages %}{% if true %}{% break %}{% endif %}x{% endfor %}done", "done"),
        ("{{ '  a,b  '.strip().split(',') | join('+') }}{{ 'x'.upper() }}", "a+bX"),
        ("{% generation %}{{ messages[0].content }}{% endgeneration %}", "hi"),
        ("{{ strftime_now('%Y') | length }}", "4"),
    ],
)
def test_transformers_parity(template: str, expected: str) -> None:
    assert render_chat([ChatMessage("user", "hi")], template=template) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ raise_exception('no system role') }}",
        "{{ tools.x.y }}",
        "{{ messages[0].content + 1 }}",
        "{{ 1 / 0 }}",
        "{{ messages[5].content }}",
    ],
)
def test_any_template_error_is_a_precise_invalid_request(template: str) -> None:
    with pytest.raises(InvalidRequest, match="the chat template"):
        render_chat([ChatMessage("user", "hi")], template=template)


def test_extra_variables_reach_the_template() -> None:
    """`enable_thinking=False` (how `think: false` renders) reaches Qwen3's template."""
    template = (DATA / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    on = render_chat(CHAT, template=template)
    off = render_chat(CHAT, template=template, extra={"enable_thinking": False})
    assert off.endswith("<think>\n\n</think>\n\n") and not on.endswith("</think>\n\n")
