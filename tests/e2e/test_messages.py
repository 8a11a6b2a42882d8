"""Messages that point the right way (issue 18, items 6 and 8-11), from a real daemon and the real CLI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from ..conftest import EMBED_FILE, EMBED_REPO, STORIES_REPO, TINY_REPO, model_file
from ..hubstub import HubStub
from .conftest import Daemon, free_port, localllm_command, start_daemon, stop_daemon

STORIES = f"hf.co/{STORIES_REPO}"


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    daemon = start_daemon(tmp_path_factory.mktemp("messages"), hub)
    try:
        with httpx.stream("POST", daemon.url + "/api/pull", json={"model": STORIES}, timeout=120) as r:
            daemon.pull_events = [json.loads(line) for line in r.iter_lines() if line]  # type: ignore[attr-defined]
        yield daemon
    finally:
        stop_daemon(daemon)


# -- item 8: a 404 says how to get the model, or names the one it probably means -----------------------------


def test_a_missing_model_says_how_to_pull_it(d: Daemon) -> None:
    r = httpx.post(d.url + "/api/generate", json={"model": "nothere", "prompt": "x"}, timeout=30)
    assert r.status_code == 404
    assert r.json()["error"] == "model 'nothere' not found: pull it first with 'localllm pull nothere'"


def test_a_short_name_of_a_local_hf_model_is_named_in_the_404(d: Daemon) -> None:
    for short in ("stories260K-GGUF", "testorg/stories260k-gguf"):
        r = httpx.post(d.url + "/api/show", json={"model": short}, timeout=30)
        assert r.status_code == 404
        assert f"did you mean '{STORIES}'?" in r.json()["error"]
    body = {"model": "stories260K-GGUF", "messages": [{"role": "user", "content": "x"}]}
    openai = httpx.post(d.url + "/v1/chat/completions", json=body, timeout=30)
    assert openai.status_code == 404 and f"did you mean '{STORIES}'?" in openai.json()["error"]["message"]


def test_the_cli_runs_the_one_local_model_a_short_name_matches(d: Daemon) -> None:
    result = d.cli("run", "stories260K-GGUF", "Once upon a time")
    assert result.returncode == 0, result.stderr
    assert f"using {STORIES}" in result.stderr
    assert result.stdout.strip()
    assert "pulling" not in result.stderr


# -- item 6: embed pulls a model it does not have, as run does ------------------------------------------------


def test_embed_pulls_a_missing_model_first(d: Daemon) -> None:
    model_file(EMBED_FILE)
    result = d.cli("embed", f"hf.co/{EMBED_REPO}", "a cat", "a kitten")
    assert result.returncode == 0, result.stderr
    assert "success" in result.stderr
    vectors = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(vectors) == 2 and len(vectors[0]) == 384


# -- item 10: quiet logs for what is normal -----------------------------------------------------------------


def test_a_stopped_runner_is_info_and_pull_requests_are_not_logged(d: Daemon) -> None:
    r = httpx.post(d.url + "/api/generate", json={"model": STORIES, "prompt": "Once", "options": {"num_predict": 2}})
    assert r.status_code == 200
    stopped = d.cli("stop", STORIES)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 20
    while "stopped" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = d.log().splitlines()
    assert any(" INFO " in line and "runner" in line and line.endswith("stopped") for line in lines), d.log()
    assert not any("WARNING" in line and "exited" in line for line in lines), d.log()
    assert not any("HTTP Request:" in line for line in lines), "huggingface_hub's requests belong at DEBUG"


# -- item 11: pull shows the verification; run says when the context is full --------------------------------


def test_pull_reports_progress_while_verifying(d: Daemon) -> None:
    events = d.pull_events  # type: ignore[attr-defined]
    verifying = [e for e in events if e["status"] == "verifying sha256 digest" and "total" in e]
    assert verifying, events
    assert verifying[-1]["completed"] == verifying[-1]["total"] > 0
    assert [e["status"] for e in events][-2:] == ["writing manifest", "success"]


def test_run_says_when_it_stopped_because_the_context_is_full(d: Daemon) -> None:
    pulled = d.cli("pull", f"hf.co/{TINY_REPO}")
    if pulled.returncode != 0:
        pytest.skip(f"test model llama-2-tiny-random.gguf not found: {pulled.stderr}")
    body = {"model": "tinyctx", "from": f"hf.co/{TINY_REPO}", "parameters": {"num_ctx": 48}}
    assert httpx.post(d.url + "/api/create", json=body, timeout=60).status_code == 200
    full = d.cli("run", "tinyctx", "hello")
    assert full.returncode == 0, full.stderr
    assert "… stopped: context full" in full.stderr
    limited = {"model": "tinyshort", "from": "tinyctx", "parameters": {"num_predict": 3}}
    assert httpx.post(d.url + "/api/create", json=limited, timeout=60).status_code == 200
    short = d.cli("run", "tinyshort", "hello")
    assert short.returncode == 0 and "context full" not in short.stderr


# -- item 9: a host that does not resolve, and nothing listening ---------------------------------------------


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*localllm_command(), *args], env=env, capture_output=True, text=True, timeout=60)


def test_serve_on_a_name_that_does_not_resolve_says_so_first(d: Daemon) -> None:
    result = run_cli({**d.env, "LOCALLLM_HOST": "garbage.invalid"}, "serve")
    assert result.returncode == 1
    assert "LOCALLLM_HOST: no such host 'garbage.invalid': the name does not resolve" in result.stderr
    assert "beyond" not in result.stderr


def test_the_cli_tells_no_such_host_from_nothing_listening(d: Daemon) -> None:
    unresolved = run_cli({**d.env, "LOCALLLM_HOST": "garbage.invalid:11434"}, "list")
    assert unresolved.returncode == 1
    assert "no such host 'garbage.invalid'" in unresolved.stderr and "LOCALLLM_HOST" in unresolved.stderr
    nobody = run_cli({**d.env, "LOCALLLM_HOST": f"127.0.0.1:{free_port()}"}, "list")
    assert nobody.returncode == 1
    assert "nothing is listening there" in nobody.stderr
    # as root, install.sh --service writes a system unit: the hint must not send root to a user unit
    assert "'systemctl start localllm'" in nobody.stderr and "--user" not in nobody.stderr
