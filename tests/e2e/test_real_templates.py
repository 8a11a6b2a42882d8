"""Real chat templates through the real daemon and the official clients (issue 12): a model made with
Gemma 2's template (no system role, strict alternation) answers a chat that has a system message; a model
made with Mistral Nemo's (9-character call ids, tools) completes a tool round trip. One daemon per module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from ..conftest import STORIES_REPO
from .conftest import Daemon, create_with_template

pytestmark = [pytest.mark.e2e, pytest.mark.model]

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CHOICE: Any = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def d(daemon: Daemon) -> Iterator[Daemon]:
    pulled = daemon.cli("pull", f"hf.co/{STORIES_REPO}")
    assert pulled.returncode == 0, pulled.stderr
    create_with_template(daemon, "gemma2-tpl", "google-gemma-2-2b-it.jinja")
    create_with_template(daemon, "nemo-tpl", "mistralai-Mistral-Nemo-Instruct-2407.jinja")
    yield daemon


def test_gemma2_answers_a_chat_with_a_system_message(d: Daemon) -> None:
    client = ollama.Client(host=d.url)
    system = "You are a storyteller who likes cats and dogs and long walks."
    user = {"role": "user", "content": "Tell me a story."}
    options = {"temperature": 0, "num_predict": 8}
    with_system = client.chat("gemma2-tpl", messages=[{"role": "system", "content": system}, user], options=options)
    without = client.chat("gemma2-tpl", messages=[user], options=options)
    assert with_system.message.content
    assert (with_system.prompt_eval_count or 0) > (without.prompt_eval_count or 0)  # the system text is in
    # Two user turns in a row: merged for a template that enforces alternation, not a 400.
    twice = client.chat("gemma2-tpl", messages=[user, {"role": "user", "content": "Now."}], options=options)
    assert twice.message.content
    shown = client.show("gemma2-tpl")
    assert "completion" in (shown.capabilities or []) and "tools" not in (shown.capabilities or [])


def test_mistral_nemo_tool_round_trip(d: Daemon) -> None:
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="unused")
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="nemo-tpl",
        messages=messages,
        tools=[WEATHER],
        tool_choice=CHOICE,
        temperature=0,
        max_tokens=200,
    )
    calls = first.choices[0].message.tool_calls or []
    assert len(calls) == 1, first.choices[0]
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    call_id = calls[0].id
    assert len(call_id) == 9 and call_id.isalnum(), call_id  # the shape Mistral's template demands
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(
        model="nemo-tpl",
        messages=messages,
        tools=[WEATHER],
        temperature=0,
        max_tokens=8,
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert isinstance(arguments, dict)
    # The same round trip through the ollama client, with an id in OpenAI's shape: rendered as 9 characters.
    history: list[Any] = [
        {"role": "user", "content": "Weather in Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}],
        },
        {"role": "tool", "content": '{"temperature": 25}', "tool_name": "get_weather"},
    ]
    out = ollama.Client(host=d.url).chat(
        "nemo-tpl", messages=history, tools=[WEATHER], options={"temperature": 0, "num_predict": 8}
    )
    assert out.message.content is not None
    shown = ollama.Client(host=d.url).show("nemo-tpl")
    assert "tools" in (shown.capabilities or [])


def test_show_reports_tools_only_where_the_template_renders_them(d: Daemon) -> None:
    """A template that only mentions "tools" (the old substring test said yes) does not take tools."""
    template = "{# no tools here #}{% for m in messages %}{{ m.content }}{% endfor %}"
    body = {"model": "mentions-tools", "from": f"hf.co/{STORIES_REPO}", "template": template, "stream": False}
    assert httpx.post(d.url + "/api/create", json=body, timeout=60).status_code == 200
    shown = ollama.Client(host=d.url).show("mentions-tools")
    assert shown.capabilities == ["completion"]
