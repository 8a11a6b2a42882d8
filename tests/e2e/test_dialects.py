"""The vLLM, LMDeploy and Triton dialects and the `POST /generate` dispatch, against a real daemon and real
llama.cpp (stories260K, greedy), byte for byte where the framing matters (their pure translators:
tests/unit/test_dialects.py)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

STORIES = f"hf.co/{STORIES_REPO}"
PROMPT = "Once upon a time"
GREEDY_12 = ", there was a little girl named Lily. She"
GREEDY_8 = ", there was a little girl"

# -- a real daemon ---------------------------------------------------------------------------------------

pytestmark_e2e = [pytest.mark.e2e, pytest.mark.model]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    """No LOCALLLM_DEFAULT_MODEL here: requests name their model. Four slots, as sessions must share them. Every
    token its own chunk, as in the shared test daemon: the byte-exact stream tests must not depend on timing."""
    dialects = tmp_path_factory.mktemp("dialects")
    with daemon_with(dialects, hub, (STORIES_REPO,), LOCALLLM_NUM_PARALLEL="4", LOCALLLM_STREAM_INTERVAL="0") as d:
        yield d


def post(server: Daemon, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


@pytest.mark.e2e
@pytest.mark.model
def test_vllm_generate_whole_and_with_n(server: Daemon) -> None:
    body = {"model": STORIES, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    assert post(server, "/generate", body).json() == {"text": [PROMPT + GREEDY_12]}
    out = post(server, "/generate", {**body, "n": 3, "temperature": 1.0, "seed": 5}).json()["text"]
    again = post(server, "/generate", {**body, "n": 3, "temperature": 1.0, "seed": 5}).json()["text"]
    assert out == again and len(set(out)) == 3 and all(t.startswith(PROMPT) for t in out)


@pytest.mark.e2e
@pytest.mark.model
def test_vllm_stream_is_cumulative_ndjson(server: Daemon) -> None:
    body = {"model": STORIES, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
    response = post(server, "/generate", body)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    # vLLM's framing: `json.dumps(...)` with its spaces, one object a line; each line the text so far (a line
    # per step: tokens that come together share one)
    lines = response.content.split(b"\n")
    assert lines[0] == b'{"text": ["Once upon a time,"]}' and lines[-1] == b""
    assert lines[-2] == b'{"text": ["Once upon a time, there was a"]}'
    assert all(line == json.dumps(json.loads(line)).encode() for line in lines[:-1])
    lines = post(server, "/generate", {**body, "n": 2, "temperature": 1.0, "seed": 3}).content.splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    assert all(len(t) == 2 for t in texts)
    for before, after in zip(texts, texts[1:], strict=False):
        assert all(b2.startswith(b1) for b1, b2 in zip(before, after, strict=True)), "each line is cumulative"


@pytest.mark.e2e
@pytest.mark.model
def test_lmdeploy_session_sends_only_the_new_turn_and_evaluates_only_it(server: Daemon) -> None:
    def turn(text: str, **extra: Any) -> dict[str, Any]:
        body = {"model": STORIES, "prompt": text, "session_id": 11, "interactive_mode": True}
        response = post(server, "/v1/chat/interactive", {**body, "request_output_len": 8, "temperature": 0, **extra})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def interfere() -> None:  # other traffic on the other slots between the turns
        body = {"model": STORIES, "prompt": "The dog", "max_tokens": 6, "n": 3, "temperature": 1.0, "seed": 1}
        assert len(post(server, "/generate", body).json()["text"]) == 3

    first = turn(PROMPT)
    assert first["text"] == GREEDY_8 and first["finish_reason"] == "length"
    assert (first["tokens"], first["input_tokens"], first["history_tokens"]) == (8, 5, 0)
    interfere()
    second = turn("Lily liked")
    assert (second["tokens"], second["input_tokens"], second["history_tokens"]) == (8, 3, 13)
    # Only the new turn is evaluated; the one token more is the last reply token, cut by the length limit
    # and so never fed back. The rest of the 16-token prompt comes from the session's KV cache.
    assert second["prompt_eval_count"] == second["input_tokens"] + 1
    # the same as the whole history sent again, as Ollama's `context` does
    options = {"temperature": 0, "num_predict": 8}
    one = post(server, "/api/generate", {"model": STORIES, "prompt": PROMPT, "options": options, "stream": False})
    body = {"model": STORIES, "prompt": "Lily liked", "context": one.json()["context"], "options": options}
    two = post(server, "/api/generate", {**body, "stream": False}).json()
    assert two["response"] == second["text"]
    interfere()
    body = {"model": STORIES, "prompt": "The end", "session_id": 11, "interactive_mode": True, "stream": True}
    raw = post(server, "/v1/chat/interactive", {**body, "request_output_len": 8, "temperature": 0}).content
    lines = [json.loads(line) for line in raw.splitlines()]
    # One JSON object a line; pieces written while the client was slow may have been merged into fewer lines.
    assert raw.endswith(b"}\n") and all(line.startswith(b"{") for line in raw.splitlines())
    assert all(line["finish_reason"] is None for line in lines[:-1]) and lines[-1]["finish_reason"] == "length"
    counts = [line["tokens"] for line in lines]
    assert counts == sorted(counts) and counts[-1] == 8
    body = {"model": STORIES, "prompt": "The end", "context": two["context"], "options": options, "stream": False}
    assert "".join(line["text"] for line in lines) == post(server, "/api/generate", body).json()["response"]
    third = lines[-1]
    assert (third["input_tokens"], third["history_tokens"]) == (3, 24)
    assert third["prompt_eval_count"] == third["input_tokens"] + 1
    # the last turn ends the session: a new one starts from nothing
    last = turn("Then", interactive_mode=False)
    assert last["history_tokens"] == 24 + 3 + 8
    again = turn(PROMPT)
    assert again["history_tokens"] == 0 and again["text"] == GREEDY_8


@pytest.mark.e2e
@pytest.mark.model
def test_lmdeploy_legacy_generate_with_instance_id(server: Daemon) -> None:
    base = {"model": STORIES, "instance_id": 21, "request_output_len": 8, "temperature": 0}
    first = post(server, "/generate", {**base, "prompt": PROMPT, "sequence_start": True, "sequence_end": False})
    assert first.json()["text"] == GREEDY_8
    second = post(server, "/generate", {**base, "prompt": "Lily", "sequence_start": False, "sequence_end": True})
    assert second.json()["history_tokens"] == 13
    gone = post(server, "/generate", {**base, "prompt": "Lily", "sequence_start": False})
    assert gone.status_code == 400
    assert gone.json()["object"] == "error" and "sequence_start" in gone.json()["message"]


@pytest.mark.e2e
@pytest.mark.model
def test_lmdeploy_sessions_end_when_their_model_unloads(server: Daemon) -> None:
    body = {"model": STORIES, "prompt": PROMPT, "session_id": 41, "interactive_mode": True, "request_output_len": 4}
    assert post(server, "/v1/chat/interactive", body).json()["history_tokens"] == 0
    assert post(server, "/v1/chat/interactive", body).json()["history_tokens"] == 9
    assert post(server, "/api/generate", {"model": STORIES, "keep_alive": 0}).json()["done_reason"] == "unload"
    assert post(server, "/v1/chat/interactive", body).json()["history_tokens"] == 0


@pytest.mark.e2e
@pytest.mark.model
def test_lmdeploy_cancel_stops_the_turn_in_flight(server: Daemon) -> None:
    body = {"model": STORIES, "prompt": PROMPT, "session_id": 31, "interactive_mode": True, "stream": True}
    body |= {"request_output_len": 1500, "ignore_eos": True, "temperature": 0}
    lines: list[dict[str, Any]] = []
    with httpx.stream("POST", server.url + "/v1/chat/interactive", json=body, timeout=60) as response:
        for line in response.iter_lines():
            lines.append(json.loads(line))
            if len(lines) == 1:
                threading.Thread(
                    target=post, args=(server, "/v1/chat/interactive", {"session_id": 31, "cancel": True})
                ).start()
    assert lines[-1]["finish_reason"] == "abort" and lines[-1]["tokens"] < 1500
    # the cancelled turn is not part of the session
    after = post(server, "/v1/chat/interactive", {**body, "stream": False, "request_output_len": 2})
    assert after.json()["history_tokens"] == 0


@pytest.mark.e2e
@pytest.mark.model
def test_lmdeploy_encode_and_errors(server: Daemon) -> None:
    out = post(server, "/v1/encode", {"model": STORIES, "input": PROMPT}).json()
    assert out == {"input_ids": [1, 403, 407, 261, 378], "length": 5}
    out = post(server, "/v1/encode", {"model": STORIES, "input": [PROMPT, "a"], "add_bos": False}).json()
    assert out["input_ids"][0] == [403, 407, 261, 378] and out["length"] == [4, 1]
    bad = post(server, "/v1/chat/interactive", {"model": STORIES, "prompt": "x", "session_id": 1, "top_p": 2})
    assert bad.status_code == 400
    assert bad.json() == {
        "object": "error",
        "message": "top_p must be > 0 and <= 1, got 2",
        "code": 400,
        "param": "top_p",
        "type": "invalid_request_error",
    }


@pytest.mark.e2e
@pytest.mark.model
def test_triton_endpoints(server: Daemon) -> None:
    assert httpx.get(server.url + "/v2").json()["extensions"] == ["generate"]
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{STORIES}/ready"):
        assert httpx.get(server.url + path).status_code == 200
    meta = httpx.get(server.url + f"/v2/models/{STORIES}").json()
    assert meta["name"] == STORIES and meta["versions"] == ["1"]
    assert httpx.get(server.url + "/v2/models/nope/ready").status_code == 404
    body: dict[str, Any] = {"text_input": PROMPT, "parameters": {"temperature": 0, "max_tokens": 8}}
    out = post(server, f"/v2/models/{STORIES}/generate", body).json()
    assert out == {"model_name": STORIES, "model_version": "1", "text_output": PROMPT + GREEDY_8}
    body = {**body, "exclude_input_in_output": True, "return_finish_reason": True, "return_num_output_tokens": True}
    out = post(server, f"/v2/models/{STORIES}/versions/1/generate", body).json()
    assert out["text_output"] == GREEDY_8 and out["finish_reason"] == "length" and out["num_output_tokens"] == 8
    # TensorRT-LLM's style: the sampling fields at the top level
    out = post(server, f"/v2/models/{STORIES}/generate", {"text_input": PROMPT, "max_tokens": 8, "temperature": 0})
    assert out.json()["text_output"] == PROMPT + GREEDY_8


@pytest.mark.e2e
@pytest.mark.model
def test_triton_stream_is_sse_with_new_text(server: Daemon) -> None:
    body = {"text_input": PROMPT, "parameters": {"temperature": 0, "max_tokens": 3}}
    response = post(server, f"/v2/models/{STORIES}/generate_stream", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.startswith(b'data: {"model_name":"' + STORIES.encode() + b'","model_version":"1","text_output":","}')
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and all(e.startswith(b"data: {") for e in events[:-1])
    assert "".join(json.loads(e[6:])["text_output"] for e in events[:-1]) == ", there was"


@pytest.mark.e2e
@pytest.mark.model
def test_validation_errors_in_each_dialects_shape(server: Daemon) -> None:
    tgi = post(server, "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}})
    assert tgi.status_code == 422 and tgi.json()["error_type"] == "validation"
    assert "LOCALLLM_DEFAULT_MODEL" in tgi.json()["error"], "no model and no default: says how to choose"
    vllm = post(server, "/generate", {"model": STORIES, "prompt": PROMPT, "temperature": -1})
    assert vllm.status_code == 400
    assert vllm.json() | {"message": ""} == {
        "object": "error",
        "message": "",
        "type": "BadRequestError",
        "param": "temperature",
        "code": 400,
    }
    no_model = post(server, "/generate", {"prompt": PROMPT})
    assert no_model.status_code == 400 and no_model.json()["param"] == "model"
    # an unknown field is reported (docs/compat.md); one that would change the answer is refused, in the shape
    lmdeploy = post(server, "/generate", {"model": STORIES, "prompt": PROMPT, "session_id": 1, "audio": {}})
    assert lmdeploy.json()["object"] == "error" and lmdeploy.json()["param"] == "audio"
    triton = post(server, f"/v2/models/{STORIES}/generate", {"text_input": PROMPT, "parameters": {"top_p": 0}})
    assert triton.status_code == 400 and set(triton.json()) == {"error"} and "top_p" in triton.json()["error"]
    unknown = post(server, "/generate", {"text": PROMPT})
    assert unknown.status_code == 422 and re.search("TGI.*vLLM.*LMDeploy", unknown.json()["error"])
