"""Tool calls constrained in the template family's own syntax (`chat/formats/grammar.py`), on stories260K
through the real daemon and the official `openai` package: a required call from the first token, a call the
model starts of its own accord (`tool_choice: auto`) from its marker (llama.cpp's lazy grammar), free text
untouched before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest
from llama_cpp import llama_grammar

from localllm.chat.formats.grammar import SYNTAXES, call_syntax
from localllm.domain.messages import Tool
from localllm.runner.sampler import call_grammar

from ..conftest import STORIES_REPO
from .conftest import Daemon, create_with_template

pytestmark = [pytest.mark.e2e, pytest.mark.model]

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
USER: Any = [{"role": "user", "content": "Weather in Paris?"}]
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def d(daemon: Daemon) -> Iterator[Daemon]:
    pulled = daemon.cli("pull", f"hf.co/{STORIES_REPO}")
    assert pulled.returncode == 0, pulled.stderr
    create_with_template(daemon, "qwen25-tpl", "Qwen-Qwen2.5-7B-Instruct.jinja")
    create_with_template(daemon, "mistral32-tpl", "Mistral-Small-3.2-24B-Instruct-2506.jinja")
    create_with_template(daemon, "llama31-tpl", "meta-llama-Llama-3.1-8B-Instruct.jinja")
    create_with_template(daemon, "nemo-tpl", "mistralai-Mistral-Nemo-Instruct-2407.jinja")
    yield daemon


@pytest.fixture
def ai(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)


def _valid(message: Any) -> list[str]:
    """The names of the message's calls, each call's arguments checked against its tool's schema."""
    assert message.tool_calls, message.content
    for call in message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return [c.function.name for c in message.tool_calls]


@pytest.mark.parametrize("model", ["qwen25-tpl", "mistral32-tpl", "nemo-tpl", "llama31-tpl"])
def test_a_required_call_in_the_familys_syntax_parses_and_validates(ai: openai.OpenAI, model: str) -> None:
    """Constrained from the first token to the family's own call (tests/unit/test_lazy_calls.py checks that
    the job's grammar is that one), and read back by the family's parser, every seed."""
    for seed in SEEDS:
        named: Any = {"type": "function", "function": {"name": "get_weather"}}
        for choice in ("required", named):
            message = (
                ai.chat.completions.create(
                    model=model,
                    messages=USER,
                    tools=TOOLS,
                    tool_choice=choice,
                    max_tokens=200,
                    temperature=1.0,
                    seed=seed,
                )
                .choices[0]
                .message
            )
            names = _valid(message)
            assert choice == "required" or names == ["get_weather"]
            assert not message.content


def _token(d: Daemon, model: str, text: str) -> int:
    r = httpx.post(d.url + "/api/tokenize", json={"model": model, "content": text}, timeout=60)
    assert r.status_code == 200, r.text
    tokens = [t for t in r.json()["tokens"] if r.json()["tokens"]]
    return int(tokens[-1])


def test_a_call_the_model_starts_is_constrained_from_its_marker(d: Daemon, ai: openai.OpenAI) -> None:
    """Llama 3.x's call is a bare JSON object: a bias towards `{` makes stories260K start one, and from
    that `{` on (the trigger) the grammar makes it a call of a declared tool that validates, every seed."""
    brace = _token(d, "llama31-tpl", "{")
    for seed in SEEDS:
        message = (
            ai.chat.completions.create(
                model="llama31-tpl",
                messages=USER,
                tools=TOOLS,
                max_tokens=200,
                temperature=1.0,
                seed=seed,
                logit_bias={str(brace): 100},
            )
            .choices[0]
            .message
        )
        _valid(message)


def test_free_text_stays_free_until_a_call_starts(ai: openai.OpenAI) -> None:
    """With tools and `auto`, the lazy grammar changes nothing while no call starts: stories260K's greedy
    answer is the one it writes under a grammar that allows any text (which takes the call grammar's place)."""
    kw: Any = {"model": "qwen25-tpl", "messages": USER, "tools": TOOLS, "max_tokens": 60, "temperature": 0}
    lazy = ai.chat.completions.create(**kw).choices[0].message
    free = ai.chat.completions.create(**kw, extra_body={"grammar": r"root ::= [^\x00]*"}).choices[0].message
    assert lazy.content and not lazy.tool_calls
    assert lazy.content == free.content


@pytest.mark.parametrize("family", sorted(SYNTAXES))
def test_each_familys_call_grammar_parses(family: str) -> None:
    syntax = call_syntax(family, [Tool("get_weather", "", WEATHER), Tool("get_time")], lazy=True)
    assert syntax is not None
    grammar = call_grammar(syntax)
    assert llama_grammar.LlamaGrammar.from_string(grammar, verbose=False) is not None
    assert '\\"get_weather\\"' in grammar or "get_weather[ARGS]" in grammar


def test_anthropic_and_responses_get_the_same_calls(d: Daemon, ai: openai.OpenAI) -> None:
    """Every dialect's forced call goes the same way: Anthropic's `tool_choice: any` and Responses'
    `required`, on the Hermes template, each a `tool_use` / `function_call` whose input validates."""
    client = anthropic.Anthropic(base_url=d.url, api_key="unused", max_retries=0)
    tools: Any = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS]
    flat: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    for seed in SEEDS:
        reply = client.messages.create(
            model="qwen25-tpl",
            max_tokens=200,
            messages=USER,
            tools=tools,
            tool_choice={"type": "any"},
            extra_body={"seed": seed},
        )
        (use,) = [b for b in reply.content if b.type == "tool_use"]
        jsonschema.validate(use.input, SCHEMAS[use.name])
        response = ai.responses.create(
            model="qwen25-tpl",
            input="Weather in Paris?",
            tools=flat,
            tool_choice="required",
            max_output_tokens=200,
            extra_body={"seed": seed},
        )
        (call,) = [o for o in response.output if o.type == "function_call"]
        jsonschema.validate(json.loads(call.arguments), WEATHER)
