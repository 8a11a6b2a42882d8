"""Model families' own call and reasoning syntaxes through the real daemon and the official `openai` and
`anthropic` packages: the output is read by the family the chat template's text picks (`chat.formats`).

stories260K writes neither calls nor reasoning of its own accord, so its output is forced by a GBNF grammar
(the `grammar` extra) into each family's syntax, after the real chat templates of tests/data/templates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from ..conftest import STORIES_REPO
from .conftest import Daemon, create_with_template

pytestmark = [pytest.mark.e2e, pytest.mark.model]

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
USER: Any = [{"role": "user", "content": "Weather in Paris?"}]
# Qwen3-Coder's XML call after some text, as these models write it.
QWEN3_CODER = (
    r'root ::= "Let me check." [a-z ]{0,4} "\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n'
    r'</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"'
)
# Mistral Small 3.2's call with its 9-character id.
MISTRAL = r'root ::= "[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{\"city\": \"Paris\", \"days\": 3}"'
# Qwen3.5's reasoning (its prompt opens <think>), an answer, then a call.
QWEN35 = (
    r'root ::= "let me see" [a-z ]{1,8} "\n</think>\n\nOnce" [a-z ]{1,8} "\n<tool_call>\n<function=get_weather>\n'
    r'<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"'
)


@pytest.fixture(scope="module")
def d(daemon: Daemon) -> Iterator[Daemon]:
    pulled = daemon.cli("pull", f"hf.co/{STORIES_REPO}")
    assert pulled.returncode == 0, pulled.stderr
    create_with_template(daemon, "qwen3-coder-tpl", "Qwen3-Coder.jinja", temperature=0)
    create_with_template(daemon, "mistral32-tpl", "Mistral-Small-3.2-24B-Instruct-2506.jinja", temperature=0)
    create_with_template(daemon, "qwen35-tpl", "Qwen3.5-4B.jinja", temperature=0)
    yield daemon


@pytest.fixture
def ai(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)


def _chat(ai: openai.OpenAI, model: str, grammar: str, **kw: Any) -> Any:
    return ai.chat.completions.create(
        model=model, messages=USER, tools=TOOLS, max_tokens=400, temperature=0, extra_body={"grammar": grammar}, **kw
    )


def test_text_before_an_xml_call_is_the_answer_and_the_call_a_call(ai: openai.OpenAI) -> None:
    message = _chat(ai, "qwen3-coder-tpl", QWEN3_CODER).choices[0].message
    assert message.content.startswith("Let me check.") and "<" not in message.content
    (call,) = message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}  # typed by the tool's schema
    # streamed: the answer's text goes out before the call, none of the call's markup with it
    chunks = list(_chat(ai, "qwen3-coder-tpl", QWEN3_CODER, stream=True))
    said = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert said.strip() == message.content.strip() and "<" not in said
    assert [t.function.name for t in calls if t.function and t.function.name] == ["get_weather"]


def test_a_mistral_call_keeps_its_own_id(ai: openai.OpenAI) -> None:
    message = _chat(ai, "mistral32-tpl", MISTRAL).choices[0].message
    (call,) = message.tool_calls
    assert (call.id, call.function.name) == ("abcDEF123", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}


def test_reasoning_answer_and_call(ai: openai.OpenAI) -> None:
    """Qwen3.5's template opens <think> (thinking on by default): the reasoning, the answer and the call come
    apart, streamed and whole."""
    message = _chat(ai, "qwen35-tpl", QWEN35).choices[0].message
    reasoning = (message.model_extra or {})["reasoning_content"]
    assert reasoning.startswith("let me see") and "think>" not in reasoning
    assert message.content.startswith("Once") and "<" not in message.content
    (call,) = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    chunks = list(_chat(ai, "qwen35-tpl", QWEN35, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thought = [x.model_extra.get("reasoning_content") for x in deltas if (x.model_extra or {}).get("reasoning_content")]
    said = [x.content for x in deltas if x.content]
    assert len(thought) > 1 and len(said) > 1  # each streamed as it comes, not held to the end
    assert "".join(thought) == reasoning and "".join(said).strip() == message.content.strip()
