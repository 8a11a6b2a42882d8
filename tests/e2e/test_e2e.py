"""The newcomer's walk, end to end: a real daemon, real llama.cpp on the tiny models, real clients.

pull (Hub stand-in) -> list -> /api/generate stream -> /api/chat -> /v1/chat/completions (openai package)
-> the ollama package -> rm; plus the error contract and a runner killed mid-stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ..conftest import CHAT_REPO, STORIES_REPO, TINY_REPO
from .conftest import Daemon, free_port, localllm_command

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
CHAT = f"hf.co/{CHAT_REPO}"
GREEDY = {"temperature": 0, "num_predict": 40}
# What stories260K greedily writes after "Once upon a time".
LILY = "there was a little girl named Lily"


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line.strip()]


@pytest.fixture(scope="module")
def pulled(daemon: Daemon) -> Daemon:
    result = daemon.cli("pull", STORIES)
    assert result.returncode == 0, result.stderr
    assert "success" in result.stderr
    with httpx.stream("POST", daemon.url + "/api/pull", json={"model": CHAT}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = ndjson(r)
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = next(line for line in lines if line["status"].startswith("pulling ") and "digest" in line)
    assert layer["status"] == f"pulling {layer['digest'].removeprefix('sha256:')[:12]}"
    last_pulled = [line for line in lines if line["status"].startswith("pulling ") and "digest" in line][-1]
    assert last_pulled["completed"] == last_pulled["total"] > 0
    verified = lines[-3]  # the sha256 is checked with progress too (issue 18)
    assert verified["status"] == "verifying sha256 digest" and verified["completed"] == verified["total"] > 0
    return daemon


def test_list_shows_pulled_models(pulled: Daemon) -> None:
    names = {m["name"] for m in httpx.get(pulled.url + "/api/tags").json()["models"]}
    assert {f"{STORIES}:latest", f"{CHAT}:latest"} <= names
    listing = pulled.cli("list")
    assert listing.returncode == 0, listing.stderr
    assert f"{STORIES}:latest" in listing.stdout and "1.2 MB" in listing.stdout


def test_generate_streams_greedy_story(pulled: Daemon) -> None:
    body = {"model": STORIES, "prompt": "Once upon a time", "options": GREEDY}
    with httpx.stream("POST", pulled.url + "/api/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = ndjson(r)
    assert len(lines) > 5, "the answer should arrive as a stream of pieces"
    assert all(line["done"] is False for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "length"
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        assert isinstance(final[key], int), key
    assert final["eval_count"] == 40 and final["prompt_eval_count"] == 5
    text = "".join(line["response"] for line in lines)
    assert LILY in text


def test_generate_not_streamed(pulled: Daemon) -> None:
    r = httpx.post(
        pulled.url + "/api/generate",
        json={"model": STORIES, "prompt": "Once upon a time", "stream": False, "options": GREEDY},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["done"] is True and LILY in body["response"]


def test_chat_uses_the_models_template(pulled: Daemon) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Once upon a time"}], "options": GREEDY}
    with httpx.stream("POST", pulled.url + "/api/chat", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = ndjson(r)
    assert lines[-1]["done"] is True
    assert all(line["message"]["role"] == "assistant" for line in lines)
    assert LILY in "".join(line["message"]["content"] for line in lines)
    show = httpx.post(pulled.url + "/api/show", json={"model": CHAT}).json()
    assert "bos_token" in show["template"]
    assert show["model_info"]["general.architecture"] == "llama"


def test_openai_chat_completions(pulled: Daemon) -> None:
    client = openai.OpenAI(base_url=pulled.url + "/v1", api_key="unused", max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Once upon a time"}]
    done = client.chat.completions.create(model=CHAT, messages=messages, temperature=0, max_tokens=40)
    assert LILY in (done.choices[0].message.content or "")
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 40
    assert done.usage.total_tokens == done.usage.prompt_tokens + 40

    chunks = list(
        client.chat.completions.create(
            model=CHAT,
            messages=messages,
            temperature=0,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert LILY in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 40
    assert {m.id for m in client.models.list()} >= {f"{CHAT}:latest"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=messages)


def test_ollama_package(pulled: Daemon) -> None:
    client = ollama.Client(host=pulled.url)
    out = client.generate(model=STORIES, prompt="Once upon a time", options=GREEDY)
    assert LILY in (out.response or "") and out.done
    streamed = "".join(
        part.response or ""
        for part in client.generate(model=STORIES, prompt="Once upon a time", options=GREEDY, stream=True)
    )
    assert streamed == out.response
    reply = client.chat(model=CHAT, messages=[{"role": "user", "content": "Once upon a time"}], options=GREEDY)
    assert LILY in (reply.message.content or "")
    assert f"{STORIES}:latest" in {m.model for m in client.list().models}
    show = client.show(STORIES)
    assert show.details is not None and show.details.family == "llama"
    assert any(m.model == f"{STORIES}:latest" for m in client.ps().models)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="no-such-model", prompt="hi")
    assert err.value.status_code == 404
    assert client.pull(STORIES).status == "success"
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("hf.co/testorg/no-such-repo")
    assert err.value.status_code == 404


def test_cli_run_one_shot(pulled: Daemon) -> None:
    result = pulled.cli("run", STORIES, "Once upon a time")
    assert result.returncode == 0, result.stderr
    assert "Lily" in result.stdout


def store_files(daemon: Daemon) -> set[str]:
    return {str(p.relative_to(daemon.models_dir)) for p in daemon.models_dir.rglob("*")}


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/api/generate", b'{"model": "x", "prompt": ', 400, "invalid JSON"),
        ("/api/generate", b'{"prompt": "hi"}', 400, "model is required"),
        (
            "/api/generate",
            json.dumps({"model": STORIES, "prompt": "hi", "options": {"temperature": "hot"}}).encode(),
            400,
            "options.temperature",
        ),
        ("/api/generate", b'{"model": "no-such-model", "prompt": "hi"}', 404, "not found"),
        ("/api/generate", b'{"model": "../../etc/passwd", "prompt": "hi"}', 400, "invalid model name"),
        ("/api/chat", b'{"model": "../../etc/passwd", "messages": []}', 400, "invalid model name"),
        ("/api/pull", b'{"model": "../../etc/passwd"}', 400, "invalid model name"),
        ("/api/show", b'{"model": "..%2f..%2fetc"}', 400, "invalid model name"),
        ("/api/delete", b'{"model": "hf.co/../../etc/passwd"}', 400, "invalid model name"),
        (
            "/api/chat",
            json.dumps({"model": STORIES, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
            400,
            "messages[0].role",
        ),
    ],
)
def test_bad_input_is_a_clear_4xx(pulled: Daemon, path: str, body: bytes, status: int, needle: str) -> None:
    before = store_files(pulled)
    method = "DELETE" if path == "/api/delete" else "POST"
    r = httpx.request(method, pulled.url + path, content=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error
    assert "Traceback" not in r.text
    assert store_files(pulled) == before


def test_openai_bad_input_names_the_param(pulled: Daemon) -> None:
    client = openai.OpenAI(base_url=pulled.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], temperature="hot")  # type: ignore[call-overload]
    assert err.value.body["param"] == "temperature"  # type: ignore[index]
    r = httpx.post(pulled.url + "/v1/chat/completions", content=b"{nope")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_runner_killed_mid_stream(daemon: Daemon) -> None:
    pull = daemon.cli("pull", f"hf.co/{TINY_REPO}")
    if pull.returncode != 0 and "not found" in pull.stderr:
        pytest.skip("test model llama-2-tiny-random.gguf not found (fetch it with scripts/test-models)")
    assert pull.returncode == 0, pull.stderr
    body = {"model": f"hf.co/{TINY_REPO}", "prompt": "Hello", "options": {"num_predict": 100000, "seed": 1}}
    with httpx.stream("POST", daemon.url + "/api/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert first["done"] is False
        pids = daemon.runner_pids()
        assert pids, "a runner process should be serving the stream"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        rest = [json.loads(line) for line in lines if line.strip()]
    assert "error" in rest[-1], rest[-3:]
    assert "SIGKILL" in rest[-1]["error"]
    assert httpx.get(daemon.url + "/").status_code == 200
    again = httpx.post(
        daemon.url + "/api/generate", json={**body, "stream": False, "options": {"num_predict": 5}}, timeout=60
    )
    assert again.status_code == 200, again.text
    assert again.json()["eval_count"] == 5


def test_rm_removes_model_and_blobs(pulled: Daemon) -> None:
    copy = httpx.post(pulled.url + "/api/copy", json={"source": STORIES, "destination": "story-copy"})
    assert copy.status_code == 200
    result = pulled.cli("rm", "story-copy")
    assert result.returncode == 0, result.stderr
    r = httpx.post(pulled.url + "/api/show", json={"model": "story-copy"})
    assert r.status_code == 404
    # The blob is still used by the original, so it stays.
    assert httpx.post(pulled.url + "/api/show", json={"model": STORIES}).status_code == 200
    result = pulled.cli("rm", STORIES)
    assert result.returncode == 0, result.stderr
    blobs = {p.name for p in (pulled.models_dir / "blobs").iterdir()}
    assert not any(name.startswith("sha256-270cba1bd510") for name in blobs)


def test_bad_setting_stops_the_daemon_naming_it(daemon: Daemon) -> None:
    env = {**daemon.env, "LOCALLLM_KEEP_ALIVE": "forever", "LOCALLLM_HOST": "127.0.0.1:1"}
    result = subprocess.run([*localllm_command(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "LOCALLLM_KEEP_ALIVE" in result.stderr and "Traceback" not in result.stderr


def test_cli_says_when_the_daemon_is_not_running(daemon: Daemon) -> None:
    env = {**daemon.env, "LOCALLLM_HOST": f"127.0.0.1:{free_port()}"}
    result = subprocess.run([*localllm_command(), "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "localllm serve" in result.stderr and "Traceback" not in result.stderr
