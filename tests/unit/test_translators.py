"""Each dialect's request translator on fixed bodies, as pure functions: no daemon, no model, no subprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.errors import InvalidRequest
from localllm.domain.names import parse_name
from localllm.domain.options import Options
from localllm.modelstore.store import Store
from localllm.scheduling.scheduler import Scheduler
from localllm.server.dialects import lmdeploy, triton, vllm
from localllm.server.dialects.compat import dialect_of
from localllm.server.dialects.ollama import requests as ollama
from localllm.server.dialects.openai import requests as openai
from localllm.server.dialects.tgi import requests as tgi
from localllm.service.core import Service

USER = [{"role": "user", "content": "hi"}]


def refused(translate: Any, body: dict[str, Any], field: str) -> str:
    """The message of the 400 that `translate(body)` raises, which must name `field`."""
    with pytest.raises(InvalidRequest) as raised:
        translate(body)
    assert raised.value.field == field
    return str(raised.value)


# -- Ollama ----------------------------------------------------------------------------------------------


def test_ollama_generate_body() -> None:
    body = {
        "model": "m",
        "prompt": "Once",
        "options": {"temperature": 0.2, "stop": ["\n"], "num_ctx": 512},
        "format": "json",
        "logprobs": True,
        "top_logprobs": 3,
        "context": [1, 2],
        "keep_alive": "5m",
        "stream": False,
    }
    req, stream = ollama.to_generate_request(body)
    assert not stream and req.model == parse_name("m") and req.prompt == "Once"
    assert req.options == Options(temperature=0.2, stop=("\n",), num_ctx=512)
    assert req.constraints.format == "json" and req.constraints.logprobs == 3 and req.constraints.context == (1, 2)
    assert req.keep_alive == 300 and req.truncate


def test_ollama_chat_body_with_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    messages = [
        *USER,
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    req, stream = ollama.to_chat_request({"model": "m", "messages": messages, "tools": tools})
    assert stream and [m.role for m in req.messages] == ["user", "assistant", "tool"]
    assert req.messages[1].tool_calls[0].arguments == {"x": 1} and req.messages[2].tool_call_id == "call_1"
    assert [t.name for t in req.tools] == ["f"] and not req.call_required


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "m", "options": {"top_p": 2}}, "options.top_p"),
        ({"model": "m", "options": {"nope": 1}}, "options.nope"),
        ({"model": "m", "top_logprobs": 3}, "top_logprobs"),
        ({"model": "m", "raw": True, "system": "s"}, "raw"),
        ({"model": "m", "think": "very"}, "think"),
        ({"model": "m", "think": 1}, "think"),
        ({"model": "m", "context": [-1]}, "context"),
    ],
)
def test_ollama_generate_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    refused(ollama.to_generate_request, body, field)


# -- OpenAI ----------------------------------------------------------------------------------------------


def test_openai_chat_body() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}, *USER],
        "max_completion_tokens": 7,
        "max_tokens": 99,
        "temperature": 0.5,
        "top_k": -1,
        "repetition_penalty": 1.1,
        "stop": "\n",
        "seed": 3,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "options": {"num_ctx": 1024, "temperature": 0.1},
    }
    req, shape = openai.to_chat_request(body)
    assert [m.role for m in req.messages] == ["system", "user"] and req.messages[0].content == "be brief"
    o = req.options
    assert (o.num_predict, o.temperature, o.top_k, o.repeat_penalty, o.stop, o.seed) == (7, 0.5, None, 1.1, ("\n",), 3)
    assert o.top_p == 1.0 and o.num_ctx == 1024, "OpenAI's default top_p, Ollama's options under the request's"
    assert (shape.n, shape.stream, shape.include_usage) == (2, True, True)


def test_tgis_json_response_format_is_taken_on_chat_completions() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = {"model": "m", "messages": USER, "response_format": {"type": "json", "value": schema}}
    req, _ = openai.to_chat_request(body)  # huggingface_hub's InferenceClient.chat_completion docstring example
    assert req.constraints.format == schema


def test_llama_servers_schema_fields_constrain_chat_and_completions() -> None:
    """llama-server's top-level `json_schema` and `response_format: {"type": "json_object", "schema": ...}`
    constrain the output (both were dropped: unconstrained output with a 200)."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req, _ = openai.to_chat_request({"model": "m", "messages": USER, "json_schema": schema})
    assert req.constraints.format == schema
    object_format = {"type": "json_object", "schema": schema}
    req, _ = openai.to_chat_request({"model": "m", "messages": USER, "response_format": object_format})
    assert req.constraints.format == schema
    req, _ = openai.to_chat_request({"model": "m", "messages": USER, "response_format": {"type": "json_object"}})
    assert req.constraints.format == "json"
    reqs, _ = openai.to_completion_request({"model": "m", "prompt": "x", "json_schema": schema})
    assert reqs[0].constraints.format == schema
    with pytest.raises(InvalidRequest) as both:
        openai.to_chat_request(
            {"model": "m", "messages": USER, "json_schema": schema, "response_format": object_format}
        )
    assert both.value.field == "json_schema"


def test_openai_required_tool_call_constrains_the_output() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req, _ = openai.to_chat_request({"model": "m", "messages": USER, "tools": tools, "tool_choice": "required"})
    assert req.call_required and req.constraints.format["properties"]["name"] == {"const": "f"}
    req, _ = openai.to_chat_request({"model": "m", "messages": USER, "tools": tools, "tool_choice": "none"})
    assert req.tools == () and not req.call_required


def test_openai_completion_body() -> None:
    reqs, shape = openai.to_completion_request({"model": "m", "prompt": ["a", "b"], "echo": True, "n": 2, "best_of": 3})
    assert [r.prompt for r in reqs] == ["a", "b"] and all(r.raw for r in reqs)
    assert reqs[0].options.num_predict == 16, "the legacy endpoint's default length"
    assert (shape.echo, shape.best_of, shape.n) == (True, 3, 2)
    assert reqs[0].constraints.logprobs == 0, "best_of ranks candidates by their log-probabilities"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"model": "m", "messages": USER, "temperature": 3}, "temperature", "between 0 and 2, got 3"),
        ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens", "at least 1"),
        ({"model": "m", "messages": USER, "stop": 5}, "stop", "a string or a list of strings"),
        ({"model": "m", "messages": USER, "n": 200}, "n", "between 1 and 128"),
        ({"model": "m", "messages": USER, "top_logprobs": 2}, "top_logprobs", "needs logprobs"),
        ({"model": "m", "messages": []}, "messages", "at least one message"),
        ({"model": "m", "messages": USER, "logit_bias": {"x": 1}}, "logit_bias", "token ids"),
    ],
)
def test_openai_refusals_name_the_param(body: dict[str, Any], field: str, message: str) -> None:
    assert message in refused(openai.to_chat_request, body, field)


# -- TGI -------------------------------------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Service:
    settings = Settings(host=parse_host(""), models_dir=tmp_path / "models", default_model="stories")
    return Service(settings, Store(settings.models_dir), Scheduler())


def test_tgi_greedy_unless_sampling_is_asked_for(service: Service) -> None:
    req = tgi.parse({"inputs": "Once", "parameters": {"max_new_tokens": 5, "stop": ["."]}}, service, stream=False)
    assert req.model == parse_name("stories"), "no model named: the daemon's default model"
    assert (req.options.temperature, req.options.num_predict, req.options.stop) == (0.0, 5, (".",))
    assert not req.sampling and req.options.seed is None and req.details
    req = tgi.parse({"inputs": "x", "parameters": {"top_p": 0.5, "repetition_penalty": 1.2}}, service, stream=True)
    assert req.sampling and req.options.seed is not None, "a sampled request gets a seed it reports"
    assert (req.options.top_p, req.options.repeat_penalty, req.options.repeat_last_n) == (0.5, 1.2, -1)


@pytest.mark.parametrize(
    ("parameters", "field", "message"),
    [
        ({"top_p": 1}, "parameters.top_p", "> 0 and < 1, got 1"),
        ({"best_of": 2}, "parameters.best_of", "needs sampling"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "parameters.stop", "more than the 4 allowed"),
        ({"top_n_tokens": 6}, "parameters.top_n_tokens", "between 0 and 5"),
        ({"grammar": {"type": "regex", "value": "(a)\\1"}}, "parameters.grammar.value", "cannot be enforced"),
    ],
)
def test_tgi_refusals_name_the_parameter(
    service: Service, parameters: dict[str, Any], field: str, message: str
) -> None:
    def translate(body: dict[str, Any]) -> Any:
        return tgi.parse(body, service, stream=False)

    assert message in refused(translate, {"inputs": "x", "parameters": parameters}, field)


# -- vLLM, Triton, LMDeploy ------------------------------------------------------------------------------


def test_vllm_body_has_vllms_defaults() -> None:
    req = vllm.parse({"prompt": "Once", "n": 2, "top_k": -1, "stop": ["", "."]}, parse_name("m"))
    o = req.options
    assert (o.temperature, o.top_p, o.top_k, o.num_predict, o.stop, o.repeat_penalty) == (1.0, 1.0, 0, 16, (".",), 1.0)
    assert req.n == 2 and not req.stream
    assert "between 1 and 128" in refused(lambda b: vllm.parse(b, parse_name("m")), {"prompt": "x", "n": 0}, "n")
    refused(lambda b: vllm.parse(b, parse_name("m")), {"prompt": "x", "best_of": 3}, "best_of")


def test_triton_takes_sampling_at_the_top_or_in_parameters() -> None:
    req = triton.parse({"text_input": "Once", "parameters": {"max_tokens": 4, "stop_words": ["."], "random_seed": 7}})
    assert (req.options.num_predict, req.options.stop, req.options.seed) == (4, (".",), 7)
    assert triton.parse({"text_input": "x", "temperature": 0}).options.temperature == 0.0
    refused(triton.parse, {"text_input": "x", "max_tokens": 2, "parameters": {"max_tokens": 3}}, "max_tokens")


def test_lmdeploy_sampling_has_lmdeploys_defaults() -> None:
    options, constraints = lmdeploy.sampling({"min_new_tokens": 2}, (), legacy=True)
    o = options
    assert (o.temperature, o.top_p, o.top_k, o.num_predict) == (0.8, 0.8, 40, 512)
    assert constraints.min_tokens == 2
    assert lmdeploy.sampling({"request_output_len": 9}, ("x",), legacy=False)[0].num_predict == 9
    message = refused(lambda b: lmdeploy.sampling(b, (), legacy=False), {"top_p": 2}, "top_p")
    assert message == "top_p must be > 0 and <= 1, got 2"


def test_post_generate_dispatch() -> None:
    assert dialect_of({"inputs": "x"}) == "tgi"
    assert dialect_of({"prompt": "x", "session_id": 1}) == "lmdeploy"
    assert dialect_of({"prompt": "x"}) == "vllm"
    refused(dialect_of, {"text": "x"}, "inputs")
