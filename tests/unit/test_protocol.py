"""The runner boundary's types: each goes through its line and comes back equal; bad lines are refused."""

from __future__ import annotations

import json

import pytest

from localllm.domain.errors import ContextLengthExceeded, EngineError, EngineFailure, InvalidRequest
from localllm.domain.events import Token, TokenLogprob
from localllm.domain.media import MARKER, Media
from localllm.runner.protocol import (
    CacheReport,
    Cancel,
    Detokenize,
    Embed,
    Event,
    Failure,
    Finished,
    Job,
    LoadSpec,
    ProtocolError,
    Request,
    Rerank,
    RunnerInfo,
    Sampling,
    Scores,
    Text,
    Tokenize,
    TokenList,
    Vectors,
    decode_event,
    decode_request,
    encode_event,
    encode_request,
)

REQUESTS: list[Request] = [
    Job("hi"),
    Job(
        "Once",
        Sampling(
            temperature=0.0,
            top_k=5,
            top_p=0.5,
            min_p=0.1,
            typical_p=0.9,
            repeat_penalty=1.2,
            repeat_last_n=-1,
            presence_penalty=0.5,
            frequency_penalty=0.25,
            seed=42,
            mirostat=2,
            mirostat_tau=4.0,
            mirostat_eta=0.2,
            grammar='root ::= "a"',
            logit_bias=((5, -1.5), (7, 2.0)),
            ignore_eos=True,
        ),
        num_predict=12,
        min_tokens=3,
        stop=("END", "\n\n"),
        format={"type": "object", "properties": {"a": {"type": "integer"}}},
        logprobs=0,
        context=(1, 2, 3),
        truncate=True,
    ),
    Job("ünïcode ✓", format="json", logprobs=5),
    Tokenize("hello"),
    Tokenize("hello", add_bos=False, pieces=True),
    Tokenize(f"a{MARKER}b", media=(Media("image", b"\x89PNG\x00\xff", "messages[0].content[0]"),)),
    Embed(("a", (1, 2, 3))),
    Embed.of([[6, 7], [4, 5]], truncate=False, normalize=False),
    Rerank("what is a panda?", ("The giant panda is a bear.", "ünïcode ✓", "")),
    Rerank("q", ()),
    Detokenize((1, 15043, 0)),
    Detokenize(()),
    Cancel(),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(request_: Request) -> None:
    assert type(request_).from_message(request_.to_message()) == request_
    rid, back = decode_request(encode_request("17", request_))
    assert rid == "17" and back == request_


def test_a_tokenize_request_with_media_is_laid_out_as_a_job() -> None:
    """With media the answer is the prompt as a Job lays it out: BOS first, no pieces (media have no bytes)."""
    image = (Media("image", b"x", "images[0]"),)
    for bad in ({"pieces": True}, {"add_bos": False}):
        with pytest.raises(ValueError, match="media"):
            Tokenize(MARKER + "x", media=image, **bad)
    line = encode_request("9", Tokenize("x", add_bos=False)).replace(
        b'"text"', b'"media": [{"kind": "image", "data": "eA=="}], "text"'
    )
    with pytest.raises(ProtocolError, match="media"):
        decode_request(line)


EVENTS: list[Event] = [
    RunnerInfo(n_ctx=256, n_ctx_train=2048, n_parallel=4, n_vocab=512, gpu_offload=True, n_gpu_layers=6, n_layer=5),
    RunnerInfo(n_ctx=512, embedding=True, n_embd=384),
    RunnerInfo(n_ctx=512, vision=True, audio=True),
    Text("Once"),
    Text(" upon", (TokenLogprob(9, " upon", (32, 117), -0.25, ((9, " upon", -0.25), (11, " a", -2.5))),)),
    Finished("stop", 3, 1000, 5, 2000, context=(1, 2, 3, 4), cached_tokens=2, truncated=1),
    Finished("length", context=()),
    TokenList((1, 2, 3)),
    TokenList((1, 2), (b"", b"\xe2\x9c")),
    Vectors([[0.5, -0.25], [1.0, 0.0]], 9),
    Scores((3.25, -7.5, 0.0), 42),
    Scores((), 0),
    Failure("context", "the input is 300 tokens", n_tokens=300, n_ctx=256),
    Failure("out_of_memory", "failed to load model: llama.cpp could not create the context"),
    Failure("request", "input 1 is empty"),
    CacheReport(ram_bytes=1 << 20, ram_states=3, ram_limit=8 << 30, requests=9, slot_hits=2, ram_hits=4),
    CacheReport(),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_round_trip(event: Event) -> None:
    assert type(event).from_message(event.to_message()) == event
    for rid in ("3", None):
        assert decode_event(encode_event(rid, event)) == (rid, event)


def test_load_spec_round_trips_through_the_runners_argument() -> None:
    spec = LoadSpec("/m/model.gguf", 2048, num_gpu=12, n_threads=3, n_batch=256, use_mmap=False, n_parallel=2)
    full = LoadSpec("/m/bert.gguf", 512, embedding=True, lora=("/a.gguf", "/b.gguf"), stream_interval=0.0)
    quantised = LoadSpec("/m/x.gguf", 1, flash_attention="on", kv_cache_type="q8_0")
    cached = LoadSpec("/m/x.gguf", 64, cache_ram=0, cache_dir="/var/cache/kv", cache_disk=1 << 30)
    for s in (spec, full, LoadSpec("/m/x.gguf", 1, flash_attention="off"), quantised, cached):
        assert LoadSpec.from_argument(s.to_argument()) == s
        assert LoadSpec.from_message(s.to_message()) == s
    with pytest.raises(ProtocolError):
        LoadSpec.from_argument('{"model_path": "/m/x.gguf"}')


def test_the_text_event_is_the_token_the_daemon_passes_on() -> None:
    """No copy per piece: the event decoded from a text line is a `Token`; its line stays small."""
    _, event = decode_event(b'{"ev":"text","id":"1","text":"hi"}')
    assert isinstance(event, Token) and event.text == "hi" and event.logprobs == ()
    assert encode_event("1", Text("hi")) == b'{"ev":"text","id":"1","text":"hi"}\n', "the line as before"


def test_a_default_job_sends_only_its_prompt() -> None:
    assert json.loads(encode_request("1", Job("hi"))) == {"op": "generate", "prompt": "hi", "id": "1"}


def test_failures_become_the_daemons_errors_with_their_kind() -> None:
    context = Failure("context", "too long", n_tokens=300, n_ctx=256).error()
    assert isinstance(context, ContextLengthExceeded) and (context.n_tokens, context.n_ctx) == (300, 256)
    assert isinstance(Failure("request", "bad").error(), InvalidRequest)
    kinds: tuple[EngineFailure, ...] = ("out_of_memory", "load", "engine", "crash", "hang")
    for kind in kinds:
        error = Failure(kind, "it failed").error()
        assert isinstance(error, EngineError) and error.kind == kind and str(error) == "it failed"
    _, unknown = decode_event(b'{"ev":"error","kind":"cosmic ray","message":"x"}')
    assert unknown == Failure("engine", "x"), "an unknown kind is an engine failure, not a protocol error"


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'{"op": "generate", "prompt": "no id"}',
        b'{"op": "dance", "id": "1"}',
        b'{"op": "generate", "id": "1", "sampling": [1]}',
        b'{"op": "generate", "id": "1", "num_predict": "many"}',
        b'{"op": "embed", "id": "1", "inputs": "text"}',
        b'{"op": "rerank", "id": "1", "documents": ["a"]}',
        b'{"op": "rerank", "id": "1", "query": "q", "documents": "a"}',
        b'{"op": "detokenize", "id": "1", "tokens": [1, "a"]}',
    ],
)
def test_bad_requests_are_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(line)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"ev": "dance"}',
        b'{"ev": "text", "id": "1"}',
        b'{"ev": "done", "id": "1", "reason": "stop"}',
        b'{"ev": "scores", "id": "1", "scores": 3, "prompt_eval_count": 1}',
    ],
)
def test_bad_events_are_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_event(line)
