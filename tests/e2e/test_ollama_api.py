"""Ollama's native API, the parts beyond the walking skeleton, through the official `ollama` package against a
real daemon: create and blobs, format, logprobs, suffix, context, template, tools."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import pytest

from ..conftest import CHAT_REPO, FIM_REPO, STORIES_REPO
from ..conftest import PERSON_SCHEMA as SCHEMA
from ..ggufcopy import write_lora
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
CHAT = f"hf.co/{CHAT_REPO}"
LILY = "there was a little girl named Lily"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("ollama"), hub, (STORIES_REPO, CHAT_REPO, FIM_REPO)) as d:
        yield d


@pytest.fixture
def client(server: Daemon) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_create_from_an_uploaded_gguf_with_system_and_parameters(
    client: ollama.Client, server: Daemon, stories_gguf: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"  # bytes this daemon has never seen: not a blob until uploaded
    notes.write_bytes(b"a blob of its own: " + os.urandom(16))
    new = "sha256:" + hashlib.sha256(notes.read_bytes()).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{new}").status_code == 404
    assert client.create_blob(notes) == new
    assert httpx.head(f"{server.url}/api/blobs/{new}").status_code == 200
    digest = "sha256:" + hashlib.sha256(stories_gguf.read_bytes()).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200, "pulled with stories260K already"
    assert client.create_blob(stories_gguf) == digest
    steps = [
        p.status or ""
        for p in client.create(
            model="storyteller",
            files={"stories260K.gguf": digest},
            system="Once upon a time",
            parameters={"temperature": 0, "num_predict": 12},
            license="MIT",
            stream=True,
        )
    ]
    assert steps[0] == f"using existing layer {digest}"
    assert steps[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("creating new layer sha256:") for s in steps)
    # The system text leads the prompt and temperature 0 holds: the greedy story, every time.
    first = client.generate(model="storyteller", prompt="").response
    assert first == ""  # an empty prompt only loads the model
    answers = {client.generate(model="storyteller", prompt=",").response or "" for _ in range(2)}
    assert len(answers) == 1 and "a little girl named Lily" in answers.pop()
    shown = httpx.post(server.url + "/api/show", json={"model": "storyteller"}).json()
    assert shown["system"] == "Once upon a time" and shown["license"] == "MIT"
    assert "temperature" in shown["parameters"] and 'SYSTEM """Once upon a time"""' in shown["modelfile"]
    assert client.show("storyteller").parameters == shown["parameters"]


def test_create_from_an_existing_model_keeps_its_layers_and_adds_messages(
    client: ollama.Client, server: Daemon
) -> None:
    client.create(model="chatty", from_=CHAT, messages=[{"role": "user", "content": "Once upon a time"}])
    shown = httpx.post(server.url + "/api/show", json={"model": "chatty"}).json()
    assert shown["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert shown["template"] == httpx.post(server.url + "/api/show", json={"model": CHAT}).json()["template"]
    # The stored conversation comes before the request's messages.
    reply = client.chat(model="chatty", messages=[{"role": "user", "content": ","}], options={"temperature": 0})
    assert LILY in reply.message.content  # type: ignore[operator]
    names = {m.model for m in client.list().models}
    assert "chatty:latest" in names


def test_create_errors(client: ollama.Client, server: Daemon) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="x", files={"m.gguf": "sha256:" + "0" * 64})
    assert err.value.status_code == 400 and "upload it with POST /api/blobs" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="x", from_="no-such-model")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="x", from_=CHAT, template="{{ .Prompt }}")
    assert err.value.status_code == 400 and "Go template" in err.value.error
    # A body that does not hash to the digest is refused and not kept.
    digest = "sha256:" + hashlib.sha256(b"expected").hexdigest()
    r = httpx.post(f"{server.url}/api/blobs/{digest}", content=b"something else")
    assert r.status_code == 400 and "digest mismatch" in r.json()["error"]
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404
    assert httpx.head(f"{server.url}/api/blobs/sha256:..%2f..%2fx").status_code == 404  # no such route
    assert httpx.head(f"{server.url}/api/blobs/sha256:..x").status_code == 400
    # A blob that is not a GGUF cannot become a model.
    junk = b"GGUF but not really"
    junk_digest = "sha256:" + hashlib.sha256(junk).hexdigest()
    assert httpx.post(f"{server.url}/api/blobs/{junk_digest}", content=junk).status_code == 201
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="junk", files={"junk.gguf": junk_digest})
    assert err.value.status_code == 400 and "not a valid GGUF" in err.value.error
    assert "junk:latest" not in {m.model for m in client.list().models}


@pytest.mark.parametrize("seed", range(20))
def test_format_schema_always_validates(client: ollama.Client, seed: int) -> None:
    out = client.generate(
        model=STORIES, prompt="Once upon a time", format=SCHEMA, options={"seed": seed, "temperature": 0.9}
    )
    jsonschema.validate(json.loads(out.response or ""), SCHEMA)


def test_format_json_in_chat(client: ollama.Client) -> None:
    out = client.chat(model=CHAT, messages=[{"role": "user", "content": "Once"}], format="json", options={"seed": 1})
    assert (out.message.content or "").startswith("{")


def test_logprobs(client: ollama.Client) -> None:
    out = client.generate(
        model=STORIES,
        prompt="Once upon a time",
        logprobs=True,
        top_logprobs=2,
        options={"temperature": 0, "num_predict": 6},
    )
    lps = out.logprobs or []
    assert len(lps) == 6 and "".join(lp.token for lp in lps) == out.response
    assert all(lp.logprob <= 0 and len(lp.top_logprobs or []) == 2 for lp in lps)
    assert all(lp.top_logprobs[0].token == lp.token for lp in lps)  # type: ignore[index]
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=STORIES, prompt="x", logprobs=True, top_logprobs=21)
    assert "top_logprobs" in err.value.error


def test_context_continues_a_generation(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 8}
    first = client.generate(model=STORIES, prompt="Once upon a time", options=options)
    assert first.context
    both = client.generate(model=STORIES, prompt="Once upon a time", options={**options, "num_predict": 16})
    more = client.generate(model=STORIES, prompt="", context=first.context, options=options)
    assert more.response == "" and more.done_reason == "load"  # an empty prompt only loads
    more = client.generate(model=STORIES, prompt=" ", context=first.context, options=options)
    assert more.context and more.context[: len(first.context)] == first.context
    assert first.response and more.response and both.response
    assert (first.response + more.response).startswith(first.response) and LILY in both.response
    with pytest.raises(ollama.ResponseError):
        client.generate(model=STORIES, prompt="x", context=first.context, raw=True)


def test_template_override_and_suffix(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 8}
    plain = client.generate(model=CHAT, prompt="Once upon a time", options=options).response
    wrapped = client.generate(
        model=CHAT, prompt="a time", template="Once upon {{ messages[-1].content }}", options=options
    ).response
    assert wrapped == plain
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=STORIES, prompt="Once", suffix="The end.")
    assert "insert" in err.value.error
    filled = client.generate(model=f"hf.co/{FIM_REPO}", prompt="Once upon a time", suffix="The end.", options=options)
    assert filled.prompt_eval_count and filled.prompt_eval_count > 5


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_chat_with_tools_and_tool_results(client: ollama.Client, server: Daemon) -> None:
    # stories260K will not call a tool on its own: the answer stays text, streamed or not.
    kwargs: dict[str, Any] = {"model": CHAT, "tools": TOOLS, "options": {"temperature": 0, "num_predict": 10}}
    messages = [{"role": "user", "content": "Once upon a time"}]
    whole = client.chat(messages=messages, **kwargs)
    assert whole.message.content and not whole.message.tool_calls
    streamed = "".join(c.message.content or "" for c in client.chat(messages=messages, stream=True, **kwargs))
    assert streamed == whole.message.content
    history: list[dict[str, Any]] = [
        *messages,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    assert client.chat(messages=history, **kwargs).message.content
    bad = httpx.post(
        server.url + "/api/chat",
        json={"model": CHAT, "messages": messages, "tools": [{"type": "function", "function": {"name": "no spaces"}}]},
    )
    assert bad.status_code == 400 and "tools[0].function.name" in bad.json()["error"]


def test_over_long_generate_is_cut_and_reported_or_refused(client: ollama.Client, server: Daemon) -> None:
    options = {"temperature": 0, "num_predict": 8, "num_ctx": 64}
    long = "Once upon a time " + "the dog ran and " * 40 + "Once upon a time"
    body = {"model": STORIES, "prompt": long, "options": options, "stream": False}
    cut = httpx.post(server.url + "/api/generate", json=body, timeout=60).json()
    assert cut["truncated"] > 100 and cut["prompt_eval_count"] + cut["truncated"] > 64
    assert cut["eval_count"] == 8 and cut["response"]
    assert "cut" in server.log() and "to fit the context" in server.log()
    refused = httpx.post(server.url + "/api/generate", json={**body, "truncate": False}, timeout=60)
    assert refused.status_code == 400
    assert "longer than the context window of 64" in refused.json()["error"]
    short = httpx.post(server.url + "/api/generate", json={**body, "prompt": "Once upon a time"}, timeout=60).json()
    assert "truncated" not in short


def test_over_long_chat_drops_the_oldest_turns(server: Daemon) -> None:
    turns = []
    for i in range(12):
        turns += [
            {"role": "user", "content": f"Tell me about the dog number {i} " * 3},
            {"role": "assistant", "content": "It ran away."},
        ]
    messages = [
        {"role": "system", "content": "Once upon a time"},
        *turns,
        {"role": "user", "content": "Once upon a time"},
    ]
    body = {"model": CHAT, "messages": messages, "options": {"temperature": 0, "num_predict": 8, "num_ctx": 96}}
    out = httpx.post(server.url + "/api/chat", json={**body, "stream": False}, timeout=60).json()
    assert out["truncated"] > 100 and out["prompt_eval_count"] <= 96 - 8
    assert out["message"]["content"] and out["eval_count"] == 8
    assert "old turns" in server.log()
    refused = httpx.post(server.url + "/api/chat", json={**body, "stream": False, "truncate": False}, timeout=60)
    assert refused.status_code == 400 and "context window of 96" in refused.json()["error"]


def test_create_with_a_lora_adapter(client: ollama.Client, server: Daemon, stories_gguf: Path, tmp_path: Path) -> None:
    base = client.create_blob(stories_gguf)
    options = {"temperature": 0, "num_predict": 10}
    plain = client.generate(model=STORIES, prompt="Once upon a time", options=options).response
    results = {}
    for scale in (0.0, 0.5):
        lora = write_lora(stories_gguf, tmp_path / f"lora-{scale}.gguf", tensors=("output.weight",), scale=scale)
        name = f"story-lora-{int(scale * 10)}"
        client.create(model=name, files={"stories260K.gguf": base}, adapters={lora.name: client.create_blob(lora)})
        results[scale] = client.generate(model=name, prompt="Once upon a time", options=options).response
        assert "ADAPTER " in httpx.post(server.url + "/api/show", json={"model": name}).json()["modelfile"]
    assert results[0.0] == plain, "a zero adapter leaves the model as it was"
    assert results[0.5] != plain, "a real adapter changes what the model writes"
    # Built on an adapted model, the adapter comes along.
    client.create(model="story-lora-copy", from_="story-lora-5")
    assert client.generate(model="story-lora-copy", prompt="Once upon a time", options=options).response == results[0.5]
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="bad-lora", files={"stories260K.gguf": base}, adapters={"x.gguf": base})
    assert err.value.status_code == 400 and "not a LoRA adapter" in err.value.error


def test_a_library_name_pulls_its_hub_file_with_the_librarys_parameters(
    stories_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The Hub stand-in serves stories260K under the library's repository for smollm2:135m.
    repo = {
        "bartowski/SmolLM2-135M-Instruct-GGUF": {"SmolLM2-135M-Instruct-Q8_0.gguf": stories_gguf},
        "bartowski/SmolLM2-360M-Instruct-GGUF": {"SmolLM2-360M-Instruct-Q8_0.gguf": stories_gguf},
    }
    with HubStub(repo) as hub, daemon_with(tmp_path_factory.mktemp("library"), hub, ()) as d:
        client = ollama.Client(host=d.url)
        statuses = [p.status for p in client.pull("smollm2:135m", stream=True)]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        names = {m.model for m in client.list().models}
        assert {"smollm2:135m", "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0"} <= names
        shown = httpx.post(d.url + "/api/show", json={"model": "smollm2:135m"}).json()
        assert "temperature                    0.2" in shown["parameters"] and shown["license"] == "Apache-2.0"
        with pytest.raises(ollama.ResponseError) as err:
            client.pull("no-such-library-model:7b")
        assert err.value.status_code == 404 and "library" in err.value.error
        # A library name as FROM pulls it first.
        client.create(model="pirate", from_="smollm2:360m", system="Arr.")
        assert "smollm2:360m" in {m.model for m in client.list().models}
        assert httpx.post(d.url + "/api/show", json={"model": "pirate"}).json()["system"] == "Arr."


def test_show_modelfile_round_trips(client: ollama.Client, server: Daemon) -> None:
    from localllm.modelstore import modelfile

    client.create(
        model="roundtrip",
        from_=CHAT,
        system='She said "hi"\nthen left.',
        parameters={"temperature": 0.3, "stop": ["\n\n", "The end"]},
        messages=[{"role": "user", "content": "Once"}, {"role": "assistant", "content": "upon a time"}],
        license=["MIT"],
    )
    text = httpx.post(server.url + "/api/show", json={"model": "roundtrip"}).json()["modelfile"]
    parsed = modelfile.parse(text)
    assert parsed.system == 'She said "hi"\nthen left.'
    assert parsed.parameters == {"temperature": 0.3, "stop": ["\n\n", "The end"]}
    assert [(m.role, m.content) for m in parsed.messages] == [("user", "Once"), ("assistant", "upon a time")]
    assert parsed.license == ("MIT",) and parsed.template and "/blobs/sha256-" in parsed.from_
    # Built again (with the CLI) from what show printed, it is the same model.
    path = server.models_dir.parent / "Modelfile"
    path.write_text(text)
    created = server.cli("create", "roundtrip2", "-f", str(path))
    assert created.returncode == 0, created.stderr
    again = httpx.post(server.url + "/api/show", json={"model": "roundtrip2"}).json()
    original = httpx.post(server.url + "/api/show", json={"model": "roundtrip"}).json()
    for key in ("system", "template", "parameters", "license", "messages"):
        assert again[key] == original[key], key


def test_copy_and_delete_through_the_package(client: ollama.Client) -> None:
    client.copy(STORIES, "stories-copy")
    names = {m.model for m in client.list().models}
    assert "stories-copy:latest" in names and f"{STORIES}:latest" in names
    out = client.generate(model="stories-copy", prompt="Once upon a time", options={"temperature": 0, "num_predict": 8})
    assert (out.response or "").startswith(", there was")
    client.delete("stories-copy")
    assert "stories-copy:latest" not in {m.model for m in client.list().models}
    assert f"{STORIES}:latest" in {m.model for m in client.list().models}, "the original and its blob stay"
    assert client.generate(model=STORIES, prompt="Once", options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("stories-copy")
    assert err.value.status_code == 404
