"""Speculative decoding on real llama.cpp: prompt lookup on a copy-heavy prompt and a draft model (one of the same
vocabulary: stories260K itself, and a random llama with its tokenizer), each kept token the target's own pick;
a draft of another vocabulary refused; and through the daemon: a Modelfile's DRAFT and PARAMETERs, the counts in
the answer, `/api/ps` and `/metrics`."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from localllm.runner.batch import Batcher
from localllm.runner.draftpolicy import StepCosts
from localllm.runner.engine import Engine, LoadError
from localllm.runner.protocol import Job, LoadSpec, Sampling, encode_event
from localllm.runner.sampler import Sampler, grammar_for
from localllm.runner.speculate import DraftModel

from ..conftest import MODELS, ROOT, STORIES_REPO, TINY_REPO, model_file
from ..ggufcopy import write_random_llama
from .conftest import Daemon, start_daemon, stop_daemon

STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she "
    "saw a big red ball. She ran to get it and kicked it high in the sky. The ball flew over the trees."
)
COPY_PROMPT = f"{STORY} {STORY} {STORY[:60]}"  # the story twice, then its start: what follows is in the prompt
GREEDY = Sampling(temperature=0)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = Engine(LoadSpec(model_path=str(model_file("stories260K.gguf")), n_ctx=1024, n_parallel=2, n_threads=2))
    yield e
    e.close()


def generate(
    engine: Engine, jobs: dict[str, Job], draft: DraftModel | None = None, costs: StepCosts | None = None
) -> dict[str, Any]:
    """Each job's text and `done` message, the slots' caches emptied first. `costs`: the step costs the draft
    lengths are chosen by (default: measured as the steps run, as in the runner)."""
    for seq in range(engine.n_parallel):
        engine.forget(seq, 0)
    sent: list[dict[str, Any]] = []
    batcher = Batcher(
        engine,
        lambda rid, event: sent.append(json.loads(encode_event(rid, event))),
        functools.partial(Sampler, engine),
        grammar_for=grammar_for,
        stream_interval=0.0,
        draft=draft,
        costs=costs,
    )
    for rid, job in jobs.items():
        batcher.handle(rid, job)
    while batcher.busy:
        batcher.step()
    assert not [m for m in sent if m["ev"] == "error"], sent
    return {
        rid: (
            "".join(m["text"] for m in sent if m.get("id") == rid and m["ev"] == "text"),
            next(m for m in sent if m.get("id") == rid and m["ev"] == "done"),
        )
        for rid in jobs
    }


def assert_target_picks(engine: Engine, done: dict[str, Any], n_prompt: int) -> None:
    """Every generated token is the target's greedy pick where the whole answer is evaluated again in one batch
    (up to a near-tie: llama.cpp's kernels differ between batch shapes in the last digits)."""
    context = done["context"]
    engine.forget(0, 0)
    engine.clear_batch()
    for pos, token in enumerate(context[:-1]):
        engine.add(token, pos, 0, pos >= n_prompt - 1)
    assert engine.decode() == 0
    for i, token in enumerate(context[n_prompt:]):
        logits = engine.logits(n_prompt - 1 + i)
        assert logits[token] >= float(np.max(logits)) - 1e-3, f"token {i} of the answer is not the target's pick"
    engine.forget(0, 0)


def test_prompt_lookup_keeps_drafts_on_a_copy_heavy_prompt(engine: Engine) -> None:
    """With the step costs measured as the steps run (the runner's own policy), the answer that copies the story
    drafts, keeps, and is the target's pick throughout."""
    out = generate(
        engine,
        {
            "spec": Job(COPY_PROMPT, GREEDY, num_predict=120, draft_ngram=True),
            "other": Job("Tom had a dog.", GREEDY, num_predict=40),  # shares the steps, speculates not
        },
    )
    text, done = out["spec"]
    assert done["draft_count"] > 0 and 0 < done["draft_accepted"] <= done["draft_count"], done
    assert 0 < done["eval_count"] <= 120 and text.strip()
    assert out["other"][1]["draft_count"] == 0 and out["other"][0].strip()
    n_prompt = len(done["context"]) - done["eval_count"]
    assert_target_picks(engine, done, n_prompt)


def test_a_grammar_holds_for_the_kept_tokens(engine: Engine) -> None:
    """A JSON schema's grammar is in the sampler chain that judges each drafted token: drafts from a prompt full
    of JSON are kept where the grammar and the model allow them, and the answer is valid."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    record = '{"name": "Lily", "age": 3}'
    prompt = f"{record}\n{record}\n{record}\n"
    sampled = Sampling(temperature=0.7, seed=5)
    # (flat step costs: drafts are staged whatever they cost, so the grammar has drafted tokens to judge; on
    # this machine's measured costs a sampled, grammar-checked draft may not pay and would not be staged)
    job = Job(prompt, sampled, num_predict=60, format=schema, draft_ngram=True)
    out = generate(engine, {"r": job}, costs=StepCosts(flat=True))
    text, done = out["r"]
    assert done["reason"] == "stop", done
    answer = json.loads(text)
    assert set(answer) == {"name", "age"} and isinstance(answer["age"], int)
    assert done["draft_accepted"] > 0, done


def test_a_draft_model_of_the_same_model_is_kept_in_full(engine: Engine) -> None:
    """stories260K drafting for itself: its greedy drafts are the target's picks (bar near-ties), so nearly every
    drafted token is kept and a step gives several tokens. (Flat step costs: a draft model as slow as its target
    never pays on measured ones, and the runner would draft only its probes.)"""
    draft_engine = Engine(LoadSpec(model_path=str(model_file("stories260K.gguf")), n_ctx=1024, n_parallel=2))
    try:
        job = Job(STORY, GREEDY, num_predict=100, num_draft=4)
        out = generate(engine, {"r": job}, DraftModel(draft_engine), costs=StepCosts(flat=True))
    finally:
        draft_engine.close()
    done = out["r"][1]
    assert done["draft_count"] >= 60 and done["draft_accepted"] >= 0.9 * done["draft_count"], done
    assert_target_picks(engine, done, len(done["context"]) - done["eval_count"])


def test_a_random_draft_of_the_same_vocabulary_drafts_and_the_target_decides(engine: Engine, tmp_path: Path) -> None:
    path = write_random_llama(model_file("stories260K.gguf"), tmp_path / "draft.gguf", n_layer=1)
    spec = dataclasses.replace(LoadSpec(model_path=str(model_file("stories260K.gguf")), n_ctx=1024), draft=str(path))
    target = Engine(spec)
    draft_engine = target.load_draft()
    assert draft_engine is not None
    try:
        out = generate(target, {"r": Job(STORY, GREEDY, num_predict=60, num_draft=4)}, DraftModel(draft_engine))
        done = out["r"][1]
        assert done["draft_count"] > 0 and 0 < done["eval_count"] <= 60
        assert_target_picks(target, done, len(done["context"]) - done["eval_count"])
    finally:
        draft_engine.close()
        target.close()


def test_a_draft_of_another_vocabulary_is_refused() -> None:
    tiny = MODELS / "llama-2-tiny-random.gguf"
    if not tiny.is_file():
        pytest.skip("llama-2-tiny-random.gguf is not among the test models")
    target = Engine(LoadSpec(model_path=str(model_file("stories260K.gguf")), n_ctx=256, draft=str(tiny)))
    try:
        with pytest.raises(LoadError, match="cannot draft for .*vocabulary has 32000 tokens, the model's 512"):
            target.load_draft()
    finally:
        target.close()


@pytest.fixture(scope="module")
def spec_daemon(tmp_path_factory: pytest.TempPathFactory, hub: Any) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("spec"), hub, LOCALLLM_METRICS="1")
    try:
        yield d
    finally:
        stop_daemon(d)


def test_modelfile_draft_through_the_daemon(spec_daemon: Daemon, tmp_path: Path) -> None:
    d = spec_daemon
    assert d.cli("pull", f"hf.co/{STORIES_REPO}").returncode == 0
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM hf.co/{STORIES_REPO}\nDRAFT hf.co/{STORIES_REPO}\nPARAMETER num_draft 4\n")
    created = d.cli("create", "speculating", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    options: dict[str, Any] = {"temperature": 0, "num_predict": 60}
    body = {"model": "speculating", "prompt": STORY, "stream": False, "options": options}
    answer = httpx.post(d.url + "/api/generate", json=body, timeout=120).json()
    assert 0 < answer["eval_count"] <= 60 and answer["response"].strip()
    assert answer["draft_count"] > 0 and 0 < answer["draft_accepted_count"] <= answer["draft_count"], answer
    ps = httpx.get(d.url + "/api/ps", timeout=10).json()["models"]
    loaded = next(m for m in ps if m["name"].startswith("speculating"))
    speculation = loaded["speculation"]
    assert speculation["drafted"] == answer["draft_count"] and speculation["accepted"] == answer["draft_accepted_count"]
    assert speculation["requests"] == 1 and 0 < speculation["acceptance_rate"] <= 1
    metrics = httpx.get(d.url + "/metrics", timeout=30).text
    assert "localllm_spec_draft_tokens_total" in metrics and "localllm_spec_accepted_tokens_total" in metrics

    plain = {**body, "options": {**options, "num_draft": 0}}  # a request turns speculation off
    answer = httpx.post(d.url + "/api/generate", json=plain, timeout=120).json()
    assert "draft_count" not in answer and answer["eval_count"] > 0

    ngram = {"model": f"hf.co/{STORIES_REPO}", "prompt": COPY_PROMPT, "stream": False}
    ngram["options"] = {"temperature": 0, "num_predict": 60, "draft_ngram": True}
    answer = httpx.post(d.url + "/api/generate", json=ngram, timeout=120).json()
    assert answer["draft_accepted_count"] > 0, answer
    # the draft (here the model itself, with the same context and slots) is in the model's size: its weights and
    # KV cache, and a compute allowance (64 MiB: MIN_COMPUTE) for its own context (docs/speculation.md)
    ps = httpx.get(d.url + "/api/ps", timeout=10).json()["models"]
    plain_size = next(m["size"] for m in ps if m["name"].startswith(f"hf.co/{STORIES_REPO}"))
    extra = loaded["size"] - (2 * plain_size + 64 * 2**20)
    assert 0 <= extra < 1024, (loaded["size"], plain_size)  # (its PARAMETER blob is counted with the weights)


def test_a_draft_file_is_uploaded_and_shown(spec_daemon: Daemon, tmp_path: Path) -> None:
    """DRAFT naming a GGUF file: `localllm create` uploads it; `/api/show`'s Modelfile names it, and creating
    from that Modelfile gives the same model."""
    d = spec_daemon
    assert d.cli("pull", f"hf.co/{STORIES_REPO}").returncode == 0
    write_random_llama(model_file("stories260K.gguf"), tmp_path / "draft.gguf", n_layer=1)
    (tmp_path / "Modelfile").write_text(f"FROM hf.co/{STORIES_REPO}\nDRAFT ./draft.gguf\n")
    created = d.cli("create", "with-file-draft", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    body = {"model": "with-file-draft", "prompt": STORY, "stream": False, "options": {"temperature": 0}}
    answer = httpx.post(d.url + "/api/generate", json={**body, "options": {"num_predict": 30}}, timeout=120).json()
    assert answer["draft_count"] > 0, answer
    shown = httpx.post(d.url + "/api/show", json={"model": "with-file-draft"}, timeout=30).json()["modelfile"]
    draft_line = next(line for line in shown.splitlines() if line.startswith("DRAFT "))
    assert "sha256" in draft_line, shown
    (tmp_path / "Shown").write_text(shown)
    again = d.cli("create", "shown-again", "-f", str(tmp_path / "Shown"))
    assert again.returncode == 0, again.stderr
    digests = [
        [layer["digest"] for layer in json.loads(p.read_text())["layers"]]
        for p in (d.models_dir / "manifests").rglob("*")
        if p.is_file() and p.parent.name in ("with-file-draft", "shown-again")  # manifests/<host>/<ns>/<name>/<tag>
    ]
    assert len(digests) == 2 and set(digests[0]) == set(digests[1]), digests


def test_draft_and_option_refusals(spec_daemon: Daemon) -> None:
    d = spec_daemon
    missing = {"model": "x", "from": f"hf.co/{STORIES_REPO}", "draft": "no-such-model", "stream": False}
    r = httpx.post(d.url + "/api/create", json=missing, timeout=60)
    assert r.status_code == 400 and "draft" in r.json()["error"] and "no-such-model" in r.json()["error"], r.text
    bad = {"model": f"hf.co/{STORIES_REPO}", "prompt": "hi", "stream": False, "options": {"num_draft": 65}}
    r = httpx.post(d.url + "/api/generate", json=bad, timeout=60)
    assert r.status_code == 400 and "options.num_draft must be between 0 and 64" in r.json()["error"], r.text
    bad["options"] = {"draft_ngram": "yes"}
    r = httpx.post(d.url + "/api/generate", json=bad, timeout=60)
    assert r.status_code == 400 and "options.draft_ngram must be a boolean" in r.json()["error"], r.text
    if (MODELS / "llama-2-tiny-random.gguf").is_file():
        assert d.cli("pull", f"hf.co/{TINY_REPO}").returncode == 0
        other = {"model": "wrong-draft", "from": f"hf.co/{STORIES_REPO}", "draft": f"hf.co/{TINY_REPO}"}
        assert httpx.post(d.url + "/api/create", json={**other, "stream": False}, timeout=60).status_code == 200
        r = httpx.post(
            d.url + "/api/generate", json={"model": "wrong-draft", "prompt": "hi", "stream": False}, timeout=60
        )
        assert r.status_code >= 400 and "vocabulary" in r.json()["error"], r.text


def test_the_speculation_bench_runs(tmp_path: Path) -> None:
    """A smoke run of bench/speculate.py (localllm alone, one round, a short answer): both of its ways answer and
    the table has a row for prompt lookup."""
    if not (MODELS / "stories260K.gguf").is_file():
        pytest.skip(f"stories260K.gguf not found in {MODELS}")
    args = ["--model", "stories", "--only", "localllm", "--repeat", "1", "--tokens", "40"]
    done = subprocess.run(
        [sys.executable, str(Path(ROOT) / "bench" / "speculate.py"), *args], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| localllm | prompt lookup"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) > 0 and float(cells[3]) > 0, row  # decode tok/s with and without
