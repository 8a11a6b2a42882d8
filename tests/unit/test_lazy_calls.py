"""Tool calls in the template family's own syntax (`chat/formats/grammar.py`): the job the runner gets (a lazy
grammar started by the family's call marker for `tool_choice: auto`, one from the first token for a required
call, in place of the generic JSON object), its grammar as llama.cpp parses it, and the call read back by the
family's parser. Through the real app and service, on a fake runner that records its jobs."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.chat.formats.grammar import SYNTAXES, call_syntax, syntax_of
from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.messages import Tool
from localllm.domain.names import parse_name
from localllm.domain.options import CallSyntax
from localllm.modelstore.store import Manifest, Store
from localllm.runner.requests import Job, Sampling
from localllm.scheduling.scheduler import Scheduler
from localllm.server.app import create_app
from localllm.service.core import Service

from ..fakes import FakeFactory, write_tiny_gguf

HERMES = "{{ messages[-1].content }}{# <tool_call> #}"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def client_for(tmp_path: Path, factory: FakeFactory) -> Iterator[TestClient]:
    config = Settings(host=parse_host(""), models_dir=tmp_path / "models")
    store = Store(config.models_dir)
    for name, template in (("hermes", HERMES), ("plain", "{{ messages[-1].content }}")):
        blob = store.add_blob_file(write_tiny_gguf(tmp_path / f"{name}.gguf", template=template))
        store.write_manifest(parse_name(name), Manifest((blob,)))
    service = Service(config, store, Scheduler(factory=factory))
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


def last_job(factory: FakeFactory) -> Job:
    return [job for runner in factory.runners for job in runner.jobs][-1]


def _chat(client: TestClient, model: str, **kw: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "Weather?"}], "tools": TOOLS, **kw}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json()["choices"][0]["message"])


def test_auto_gets_a_lazy_grammar_started_by_the_familys_marker(tmp_path: Path) -> None:
    factory = FakeFactory(["Let me check.", CALL[:15], CALL[15:]])
    for client in client_for(tmp_path, factory):
        message = _chat(client, "hermes")
        calls = last_job(factory).sampling.calls
        assert calls is not None and calls.triggers == (re.escape("<tool_call>"),)
        assert last_job(factory).format is None
        assert [a[0] for a in calls.alternatives] == ["<tool_call>\n", "<tool_call>\n"]
        assert message["content"] == "Let me check."
        (call,) = message["tool_calls"]
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_a_required_call_is_constrained_from_the_first_token_in_the_familys_syntax(tmp_path: Path) -> None:
    factory = FakeFactory([CALL])
    for client in client_for(tmp_path, factory):
        for choice, names in (
            ("required", ["get_weather", "get_time"]),
            (
                {"type": "function", "function": {"name": "get_weather"}},
                ["get_weather"],
            ),
        ):
            message = _chat(client, "hermes", tool_choice=choice)
            job = last_job(factory)
            calls = job.sampling.calls
            assert job.format is None, "not the generic JSON object"
            assert calls is not None and calls.triggers == (), "from the first token"
            assert [a[1]["properties"]["name"]["const"] for a in calls.alternatives] == names  # type: ignore[index]
            (call,) = message["tool_calls"]  # read by the Hermes parser
            assert call["function"]["name"] == "get_weather"


def test_a_tool_schema_past_a_grammars_bounds_gets_no_grammar_and_a_required_one_is_a_400(tmp_path: Path) -> None:
    """Claude Code declares `maxLength: 524288`: under `auto` its tools leave the output free (no lazy grammar
    of half a million items); a required call of such a tool is refused naming its schema, as `format` is."""
    huge = {"type": "object", "properties": {"content": {"type": "string", "maxLength": 524288}}}
    tools = [{"type": "function", "function": {"name": "Write", "parameters": huge}}, *TOOLS]
    factory = FakeFactory(["Let me check."])
    for client in client_for(tmp_path, factory):
        message = _chat(client, "hermes", tools=tools)
        assert message["content"] == "Let me check." and last_job(factory).sampling.calls is None
        body = {"model": "hermes", "messages": [{"role": "user", "content": "Write"}], "tools": tools}
        r = client.post("/v1/chat/completions", json={**body, "tool_choice": "required"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].function.parameters", r.text


def test_a_template_of_no_known_family_keeps_the_generic_call(tmp_path: Path) -> None:
    factory = FakeFactory(['{"name": "get_weather", "arguments": {"city": "Paris"}}'])
    for client in client_for(tmp_path, factory):
        message = _chat(client, "plain", tool_choice="required")
        job = last_job(factory)
        assert job.sampling.calls is None and job.format is not None
        assert message["tool_calls"][0]["function"]["name"] == "get_weather"
        _chat(client, "plain")
        assert last_job(factory).sampling.calls is None, "auto: free output"


def test_another_constraint_leaves_auto_without_the_call_grammar(tmp_path: Path) -> None:
    factory = FakeFactory(["{}"])
    for client in client_for(tmp_path, factory):
        _chat(client, "hermes", response_format={"type": "json_object"})
        assert last_job(factory).sampling.calls is None


@pytest.mark.parametrize("family", sorted(SYNTAXES))
@pytest.mark.parametrize("lazy", [True, False])
def test_each_familys_call_syntax_crosses_the_wire(family: str, lazy: bool) -> None:
    tools = [Tool("get_weather", "", WEATHER), Tool("get_time", "", {"type": "object", "properties": {}})]
    syntax = call_syntax(family, tools, lazy=lazy)
    assert syntax is not None and bool(syntax.triggers) == lazy
    sampling = Sampling(calls=syntax)
    assert Sampling.from_message(json.loads(json.dumps(sampling.to_message()))) == sampling


def test_a_family_without_a_call_syntax_gets_none() -> None:
    assert call_syntax("qwen3-coder", [Tool("f")], lazy=True) is None
    assert call_syntax("hermes", [], lazy=True) is None
    with pytest.raises(ValueError):
        CallSyntax.from_message({"alternatives": [[1]]})


def test_the_job_carries_its_call_syntax_unchanged() -> None:
    syntax = call_syntax("mistral", [Tool("f", "", WEATHER)], lazy=True)
    job = Job("p", Sampling(calls=syntax))
    assert Job.from_message(json.loads(json.dumps(job.to_message()))) == dataclasses.replace(job)


@pytest.mark.parametrize(
    ("template", "syntax"),
    [
        ("Qwen-Qwen2.5-7B-Instruct", "hermes"),
        ("Mistral-Small-3.2-24B-Instruct-2506", "mistral"),
        ("mistralai-Mistral-Nemo-Instruct-2407", "mistral-list"),
        ("mistralai-Ministral-3-14B-Reasoning-2512", "ministral-3"),
        ("meta-llama-Llama-3.1-8B-Instruct", "llama-3"),
        ("Qwen3-Coder", "qwen3-coder"),
    ],
)
def test_the_syntax_a_template_teaches(template: str, syntax: str) -> None:
    text = (Path(__file__).parent.parent / "data" / "templates" / f"{template}.jinja").read_text(encoding="utf-8")
    assert syntax_of(text) == syntax
