"""OpenAI's API through the official `openai` package against a real daemon and real llama.cpp."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionToolParam,
)

from ..conftest import CHAT_REPO, FIM_REPO, STORIES_REPO
from ..conftest import PERSON_SCHEMA as SCHEMA
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

pytestmark = [pytest.mark.e2e, pytest.mark.model]

CHAT = f"hf.co/{CHAT_REPO}"
STORIES = f"hf.co/{STORIES_REPO}"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    repos = (STORIES_REPO, CHAT_REPO, FIM_REPO)
    with daemon_with(tmp_path_factory.mktemp("openai"), hub, repos, LOCALLLM_NUM_PARALLEL="4") as d:
        yield d


@pytest.fixture
def client(server: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_n_choices_are_distinct_and_reproducible_with_a_seed(client: openai.OpenAI) -> None:
    def ask() -> list[str]:
        out = client.chat.completions.create(
            model=CHAT,
            messages=USER,
            n=3,
            seed=7,
            temperature=1.0,
            max_tokens=24,
        )
        assert [c.index for c in out.choices] == [0, 1, 2]
        assert out.usage is not None
        if all(c.finish_reason == "length" for c in out.choices):
            assert out.usage.completion_tokens == 3 * 24, "usage counts every choice's tokens"
        else:
            assert 3 <= out.usage.completion_tokens < 3 * 24
        return [c.message.content or "" for c in out.choices]

    first, again = ask(), ask()
    assert first == again, "the same seed gives the same choices"
    assert len(set(first)) == 3, "the choices differ from each other"


def test_logprobs_are_consistent(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=CHAT,
        messages=USER,
        temperature=0,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
    )
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 12
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one, and the top three hold at most all the mass.
        assert item.top_logprobs[0].token == item.token
        assert math.isclose(item.top_logprobs[0].logprob, item.logprob, abs_tol=1e-4)
        assert sum(math.exp(t.logprob) for t in item.top_logprobs) <= 1.0001
        assert bytes(item.bytes or []) == item.token.encode()


@pytest.mark.parametrize("seed", range(20))
def test_json_schema_output_always_validates(client: openai.OpenAI, seed: int) -> None:
    out = client.chat.completions.create(
        model=CHAT,
        messages=USER,
        seed=seed,
        temperature=0.9,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), SCHEMA)


@pytest.mark.parametrize(
    "constraint",
    [{"json_schema": SCHEMA}, {"response_format": {"type": "json_object", "schema": SCHEMA}}],
    ids=["json_schema", "json_object-schema"],
)
def test_llama_servers_schema_fields_constrain_the_output(client: openai.OpenAI, constraint: dict[str, Any]) -> None:
    for seed in range(3):
        out = client.chat.completions.create(
            model=CHAT, messages=USER, seed=seed, temperature=0.9, max_tokens=200, extra_body=constraint
        )
        jsonschema.validate(json.loads(out.choices[0].message.content or ""), SCHEMA)


def test_logit_bias_bans_a_token(client: openai.OpenAI, server: Daemon) -> None:
    plain = client.completions.create(model=STORIES, prompt="Once upon a time", temperature=0, max_tokens=8)
    assert plain.choices[0].text.startswith(",")
    comma = 432  # stories260K's "," (see tests/unit/test_batch.py for the tokenizer's ids)
    biased = client.completions.create(
        model=STORIES, prompt="Once upon a time", temperature=0, max_tokens=8, logit_bias={str(comma): -100}
    )
    assert not biased.choices[0].text.startswith(",")


def test_completions_several_prompts_and_legacy_logprobs(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=STORIES, prompt=["Once upon a time", "The dog"], n=2, temperature=0, max_tokens=6, logprobs=2
    )
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.choices[0].text == out.choices[1].text and "there" in out.choices[0].text
    lp = out.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset is not None and lp.text_offset[0] == 0
    assert lp.top_logprobs is not None and all(len(t) == 2 for t in lp.top_logprobs)


def test_sse_bytes_with_n_and_usage(server: Daemon) -> None:
    body = {
        "model": CHAT,
        "messages": USER,
        "n": 2,
        "max_tokens": 10,
        "temperature": 0.8,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).content
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert all(e.startswith(b"data: ") for e in events[:-1])
    chunks = [json.loads(e[6:]) for e in events[:-2]]
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}] * 2
    indexes = [c["choices"][0]["index"] for c in chunks if c["choices"]]
    assert set(indexes) == {0, 1}
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 20
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["length", "length"]


def test_async_client_streams(server: Daemon) -> None:
    async def scenario() -> str:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(
            model=CHAT,
            messages=USER,
            temperature=0,
            max_tokens=20,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert "there was a little girl" in asyncio.run(scenario())


def test_errors_raise_the_matching_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=USER)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=USER, top_logprobs=50, logprobs=True)
    assert err.value.body["param"] == "top_logprobs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "x " * 3000}],
            extra_body={"options": {"num_ctx": 256}},
        )
    assert err.value.code == "context_length_exceeded"


WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_ARGS = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_ARGS}},
    {"type": "function", "function": {"name": "get_time", "description": "Time", "parameters": TIME_ARGS}},
]
SCHEMAS = {"get_weather": WEATHER_ARGS, "get_time": TIME_ARGS}
WEATHER_CHOICE: ChatCompletionNamedToolChoiceParam = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("seed", range(5))
def test_forced_tool_call_arguments_validate(client: openai.OpenAI, seed: int) -> None:
    out = client.chat.completions.create(
        model=CHAT,
        messages=USER,
        tools=TOOLS,
        tool_choice=WEATHER_CHOICE,
        seed=seed,
        temperature=0.9,
        max_tokens=120,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_ARGS)


def test_required_tool_call_picks_one_of_the_tools(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=CHAT,
        messages=USER,
        tools=TOOLS,
        tool_choice="required",
        seed=3,
        max_tokens=120,
    )
    call = out.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name in SCHEMAS  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])  # type: ignore[union-attr]


def test_streamed_tool_call_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT,
        messages=USER,
        tools=TOOLS,
        tool_choice=WEATHER_CHOICE,
        seed=1,
        max_tokens=120,
        stream=True,
    )
    name, arguments, finishes, content = "", "", [], ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or []:
            assert part.index == 0
            name += part.function.name or ""  # type: ignore[union-attr]
            arguments += part.function.arguments or ""  # type: ignore[union-attr]
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
    assert finishes == ["tool_calls"] and content == ""
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER_ARGS)


def test_auto_tool_choice_without_a_call_is_plain_content(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": CHAT, "messages": USER, "tools": TOOLS, "temperature": 0, "max_tokens": 20}
    whole = client.chat.completions.create(**kwargs)
    assert whole.choices[0].finish_reason == "length" and not whole.choices[0].message.tool_calls
    text = whole.choices[0].message.content or ""
    assert len(text.split()) > 5
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True))
    assert streamed == text


def test_tool_results_in_the_history(client: openai.OpenAI) -> None:
    history: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Once upon a time it was sunny"},
    ]
    out = client.chat.completions.create(model=CHAT, messages=history, tools=TOOLS, temperature=0, max_tokens=8)
    assert out.choices[0].message.content and out.usage is not None and out.usage.prompt_tokens > 20
    with pytest.raises(openai.BadRequestError) as err:
        no_call_id: list[Any] = [*history[:2], {"role": "tool", "content": "x"}]
        client.chat.completions.create(model=CHAT, messages=no_call_id)
    assert err.value.body["param"] == "messages[2].tool_call_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=CHAT,
            messages=USER,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch_rockets"}},
        )
    assert err.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_echo_sends_the_prompt_back_first(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": STORIES, "prompt": "Once upon a time", "temperature": 0, "max_tokens": 8}
    plain = client.completions.create(**kwargs).choices[0].text
    echoed = client.completions.create(**kwargs, echo=True).choices[0].text
    assert echoed == "Once upon a time" + plain
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, echo=True, stream=True))
    assert streamed == echoed
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**kwargs, echo=True, logprobs=1)
    assert err.value.body["param"] == "echo"  # type: ignore[index]


def test_best_of_returns_the_most_likely_candidates(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": STORIES, "prompt": "The dog", "temperature": 1.0, "seed": 11, "max_tokens": 10}
    # The same seeds give the same three candidates, with their log-probabilities.
    candidates = client.completions.create(**kwargs, n=3, logprobs=0).choices
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in candidates]
    ranked = [candidates[i].text for i in sorted(range(3), key=lambda i: -means[i])]
    best = client.completions.create(**kwargs, n=2, best_of=3)
    assert [c.text for c in best.choices] == ranked[:2]
    assert [c.index for c in best.choices] == [0, 1]
    assert all(c.logprobs is None for c in best.choices), "logprobs were not asked for"
    assert best.usage is not None and best.usage.completion_tokens >= 3 * 5, "every candidate is counted"
    for bad in ({"n": 3, "best_of": 2}, {"best_of": 2, "stream": True}, {"best_of": 50}):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(**{**kwargs, **bad})
        assert err.value.body["param"] == "best_of"  # type: ignore[index]


def test_suffix_fills_in_the_middle_when_the_model_can(client: openai.OpenAI, server: Daemon) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=STORIES, prompt="Once upon a time", suffix="The end.", max_tokens=4)
    assert err.value.body["param"] == "suffix" and "insert" in err.value.message  # type: ignore[index]
    fim = f"hf.co/{FIM_REPO}"
    show = httpx.post(server.url + "/api/show", json={"model": fim}, timeout=30).json()
    assert "insert" in show["capabilities"]
    plain = client.completions.create(model=fim, prompt="Once upon a time", temperature=0, max_tokens=4)
    filled = client.completions.create(
        model=fim, prompt="Once upon a time", suffix="The end.", temperature=0, max_tokens=4
    )
    assert filled.usage is not None and plain.usage is not None
    # prefix, suffix and middle tokens around the prompt, and the suffix's own tokens
    assert filled.usage.prompt_tokens >= plain.usage.prompt_tokens + 3 + 2


def test_min_tokens_and_mirostat(client: openai.OpenAI) -> None:
    eos = 2  # stories260K's </s>: biased up, the answer ends at once unless min_tokens holds it off
    kwargs: dict[str, Any] = {"model": STORIES, "prompt": "Once upon a time", "temperature": 0, "max_tokens": 50}
    ended = client.completions.create(**kwargs, logit_bias={str(eos): 100})
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens == 0
    held = client.completions.create(**kwargs, logit_bias={str(eos): 100}, extra_body={"min_tokens": 7})
    assert held.choices[0].finish_reason == "stop" and held.usage.completion_tokens == 7
    assert held.choices[0].text == client.completions.create(**{**kwargs, "max_tokens": 7}).choices[0].text

    # llama.cpp's grammar and ignore_eos, at the top level as llama.cpp's server and vLLM take them
    yes_no = client.completions.create(**kwargs, extra_body={"grammar": 'root ::= " yes" | " no"'})
    assert yes_no.choices[0].text in (" yes", " no") and yes_no.choices[0].finish_reason == "stop"
    endless = client.completions.create(
        **{**kwargs, "max_tokens": 12}, logit_bias={str(eos): 100}, extra_body={"ignore_eos": True}
    )
    assert endless.choices[0].finish_reason == "length" and endless.usage.completion_tokens == 12

    def mirostat(seed: int) -> str:
        extra = {"mirostat": 2, "mirostat_tau": 3.0, "mirostat_eta": 0.1}
        out = client.completions.create(
            **{**kwargs, "temperature": 0.8, "seed": seed, "max_tokens": 24}, extra_body=extra
        )
        return str(out.choices[0].text)

    assert mirostat(5) == mirostat(5) and len(mirostat(5)) > 20
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**kwargs, extra_body={"mirostat": 3})
    assert err.value.body["param"] == "mirostat"  # type: ignore[index]


def test_json_object_ignored_fields_and_text_parts(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=CHAT,
        messages=[
            {
                "role": "developer",
                "content": [{"type": "text", "text": "Once upon"}, {"type": "text", "text": " a time"}],
            }
        ],
        response_format={"type": "json_object"},
        seed=4,
        temperature=0.7,
        max_tokens=200,
        user="someone",
        store=False,
        metadata={"k": "v"},
        service_tier="auto",
        parallel_tool_calls=False,
    )
    text = out.choices[0].message.content or ""
    assert text.startswith("{"), "json_object asks for a JSON object"
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id: m for m in client.models.list()}
    name = f"{CHAT}:latest"
    assert name in ids and ids[name].owned_by == "testorg" and ids[name].created > 1_600_000_000
    got = client.models.retrieve(name)  # the id holds "/" and ":"
    assert (got.id, got.owned_by, got.created) == (name, "testorg", ids[name].created)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("hf.co/testorg/missing:latest")


def test_async_client_whole_answer(server: Daemon) -> None:
    async def scenario() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        chat, text = await asyncio.gather(
            client.chat.completions.create(model=CHAT, messages=USER, temperature=0, max_tokens=20),
            client.completions.create(model=STORIES, prompt="Once upon a time", temperature=0, max_tokens=20),
        )
        return chat.choices[0].message.content or "", text.choices[0].text

    chat, text = asyncio.run(scenario())
    assert "there was a little girl" in chat and "there was a little girl" in text


def test_several_prompts_that_all_fail_answer_the_first_error(server: Daemon) -> None:
    """Each prompt's generation fails at once (a grammar that does not parse); the answer is that 400, never a
    500 from closing a generation still running (found by the OpenAPI fuzz test)."""
    body = {"model": STORIES, "prompt": ["a", "b", "c", "d"], "grammar": "not a grammar", "max_tokens": 4}
    for _ in range(6):
        r = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["message"] == "the grammar does not parse", r.text
