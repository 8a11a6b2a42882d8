"""OpenAI's Responses API (`/v1/responses`) with the official `openai` package against the real daemon and the
chat-template copy of stories260K: whole and streamed answers, a forced function call, a conversation
continued by `previous_response_id` (reusing the KV cache), retrieve and delete, the SSE bytes, and stored
responses kept on disk (`LOCALLLM_RESPONSES_DIR`) across a restart of the daemon."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from ..conftest import CHAT_REPO, ROOT
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

CHAT = f"hf.co/{CHAT_REPO}"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "days": {"type": "integer"},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "days", "unit"],
    },
}


@pytest.fixture(scope="module")
def d(daemon: Daemon) -> Iterator[Daemon]:
    pulled = daemon.cli("pull", CHAT)
    assert pulled.returncode == 0, pulled.stderr
    yield daemon


@pytest.fixture(scope="module")
def client(d: Daemon) -> Any:  # Any: the tests send the wire's plain dicts, not the SDK's typed params
    return openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)


def greedy(**extra: Any) -> dict[str, Any]:
    return {"model": CHAT, "temperature": 0, "max_output_tokens": 24, **extra}


def test_create_answers_greedy_stories_text_and_usage(client: Any) -> None:
    r = client.responses.create(input="Once upon a time", instructions="Tell a story.", **greedy())
    assert r.id.startswith("resp_") and r.object == "response" and r.model == CHAT
    assert r.status == "incomplete" and r.incomplete_details and r.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in r.output] == ["message"]
    assert r.output_text.strip() and r.output[0].content[0].annotations == []
    assert r.usage and r.usage.output_tokens == 24 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    again = client.responses.create(input="Once upon a time", instructions="Tell a story.", **greedy())
    assert again.output_text == r.output_text and again.id != r.id  # greedy: the same text


def test_stream_gives_the_same_text_as_create(client: Any) -> None:
    whole = client.responses.create(input="Lily went", **greedy(store=False))
    with client.responses.stream(input="Lily went", **greedy(store=False)) as stream:
        events = list(stream)
    # stories260K never stops by itself: the answer ends at max_output_tokens, as `response.incomplete` (the
    # SDK's get_final_response() wants `response.completed`, so the last event's response is read instead)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1]
    assert final.type == "response.incomplete" and final.response.id == events[0].response.id
    assert len(deltas) > 1 and "".join(deltas) == whole.output_text == final.response.output_text
    events = list(client.responses.create(input="Lily went", stream=True, **greedy(store=False)))
    assert events[0].type == "response.created" and events[-1].type == "response.incomplete"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_forced_function_call_arguments_validate(client: Any) -> None:
    r = client.responses.create(
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        **greedy(max_output_tokens=200),
    )
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    # the call's answer goes back as a function_call_output, continuing from the stored response
    follow = client.responses.create(
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        **greedy(),
    )
    assert follow.output_text and follow.previous_response_id == r.id


def test_previous_response_id_continues_with_cached_input(client: Any, d: Daemon) -> None:
    first = client.responses.create(input="Tom had a red ball.", **greedy())
    second = client.responses.create(input="What did Tom do next?", previous_response_id=first.id, **greedy())
    assert first.usage and second.usage
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 8
    assert second.usage.input_tokens_details.cached_tokens > 0
    items = httpx.get(f"{d.url}/v1/responses/{second.id}/input_items", timeout=30).json()["data"]
    texts = [part["text"] for item in items for part in item.get("content", [])]
    assert texts[0] == "Tom had a red ball." and texts[1] == first.output_text and texts[-1] == "What did Tom do next?"
    counted = client.responses.input_tokens.count(
        model=CHAT, input="What did Tom do next?", previous_response_id=first.id
    )
    assert counted.input_tokens == second.usage.input_tokens


def test_retrieve_and_delete(client: Any) -> None:
    r = client.responses.create(input="A cat", **greedy())
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(input="more", previous_response_id=r.id, **greedy())
    unstored = client.responses.create(input="A dog", **greedy(store=False))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_bad_fields_are_400_naming_the_field(client: Any) -> None:
    for extra, param in (
        ({"temperature": 3}, "temperature"),
        ({"tools": [{"type": "web_search"}, {"type": "function", "name": "a b"}]}, "tools[1].name"),
        ({"extra_body": {"conversation": "conv_1"}}, "conversation"),
        ({"input": [{"type": "input_image"}]}, "input[0].type"),
    ):
        kwargs = {"input": "hi", **greedy(), **extra}
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(**kwargs)
        assert isinstance(info.value.body, dict) and info.value.body["param"] == param, info.value.body


def test_sse_bytes_event_names_order_and_sequence_numbers(d: Daemon) -> None:
    body = {"input": "Once upon a time", "stream": True, "store": False, **greedy(max_output_tokens=6)}
    with httpx.stream("POST", d.url + "/v1/responses", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes())
    frames = raw.decode().split("\n\n")
    assert frames[-1] == "" and "[DONE]" not in raw.decode()
    names, numbers, datas = [], [], []
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == event_line[len("event: ") :]
        names.append(data["type"])
        numbers.append(data["sequence_number"])
        datas.append(data)
    assert numbers == list(range(len(frames) - 1))
    head = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    tail = [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert names[:4] == head and names[-4:] == tail
    # one delta per piece the runner sent (a busy machine may join tokens), adding up to the done text
    assert set(names[4:-4]) == {"response.output_text.delta"} and 1 <= len(names[4:-4]) <= 6
    text = "".join(e["delta"] for e in datas[4:-4])
    assert text and datas[-4]["text"] == text == datas[-1]["response"]["output"][0]["content"][0]["text"]
    assert datas[-1]["response"]["usage"]["output_tokens"] == 6


def test_an_unknown_model_is_404_in_openais_shape_before_any_byte(client: Any) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model="no-such-model", input="hi", stream=stream)
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "model_not_found"


def test_the_openai_sdk_example_of_docs_agents_runs(d: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/agents.md's `openai` example, word for word but for the model and the address."""
    text = (ROOT / "docs" / "agents.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "client.responses.create" in b)
    code = block.replace("qwen2.5-coder:7b", CHAT).replace("http://127.0.0.1:11434", d.url)
    exec(compile(code, "docs/agents.md", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_stored_responses_on_disk_survive_a_restart(tmp_path: Path, hub: HubStub) -> None:
    """A conversation begun on one daemon goes on after it is stopped and another starts on the same directory;
    a response whose file was damaged meanwhile is a 404, not an error, and its file is gone."""
    responses = tmp_path / "responses"
    with daemon_with(tmp_path, hub, (CHAT_REPO,), LOCALLLM_RESPONSES_DIR=str(responses)) as before:
        client = openai.OpenAI(base_url=before.url + "/v1", api_key="unused", max_retries=0)
        first = client.responses.create(input="Tom had a red ball.", **greedy())
        damaged = client.responses.create(input="A cat", **greedy())
        gone = client.responses.create(input="A dog", **greedy())
        client.responses.delete(gone.id)
    assert sorted(p.name for p in responses.iterdir()) == sorted(f"{r.id}.json" for r in (first, damaged))
    damaged_file = responses / f"{damaged.id}.json"
    damaged_file.write_bytes(damaged_file.read_bytes()[:100])  # truncated, as by a crash mid-write
    with daemon_with(tmp_path, hub, (), LOCALLLM_RESPONSES_DIR=str(responses)) as after:
        client = openai.OpenAI(base_url=after.url + "/v1", api_key="unused", max_retries=0)
        again = client.responses.retrieve(first.id)
        assert again.id == first.id and again.output_text == first.output_text
        second = client.responses.create(input="What did Tom do next?", previous_response_id=first.id, **greedy())
        assert first.usage and second.usage and second.previous_response_id == first.id
        assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 8
        items = httpx.get(f"{after.url}/v1/responses/{second.id}/input_items", timeout=30).json()["data"]
        texts = [part["text"] for item in items for part in item.get("content", [])]
        assert texts == ["Tom had a red ball.", first.output_text, "What did Tom do next?"]
        for rid in (damaged.id, gone.id):
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(rid)
        assert not damaged_file.exists()
        assert (responses / f"{second.id}.json").exists()
