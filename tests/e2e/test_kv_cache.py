"""KV cache types through the daemon: LOCALLLM_KV_CACHE_TYPE, a model's `kv_cache_type` option (request or
Modelfile), what `/api/ps` and `localllm ps` show, and the refusals (flash attention off, heads a block does
not divide)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import STORIES_REPO, model_file
from ..ggufcopy import write_random_llama
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with, start_daemon, stop_daemon

pytestmark = pytest.mark.model

HEADS_REPO = "testorg/heads-of-32-GGUF"  # a random llama whose heads (32) hold whole q8_0 / q4_0 blocks
HEADS = f"hf.co/{HEADS_REPO}"
STORIES = f"hf.co/{STORIES_REPO}"  # heads of 8: no quantised KV cache fits


@pytest.fixture(scope="module")
def kv_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStub]:
    stories = model_file("stories260K.gguf")
    heads = write_random_llama(stories, tmp_path_factory.mktemp("heads") / "heads-of-32.gguf")
    with HubStub({HEADS_REPO: {"heads-of-32.gguf": heads}, STORIES_REPO: {"stories260K.gguf": stories}}) as hub:
        yield hub


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, kv_hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(
        tmp_path_factory.mktemp("kv"), kv_hub, [HEADS_REPO, STORIES_REPO], LOCALLLM_KV_CACHE_TYPE="Q8_0"
    ) as daemon:
        yield daemon


def generate(d: Daemon, model: str, **options: Any) -> httpx.Response:
    body = {"model": model, "prompt": "Once upon a time", "raw": True, "options": {"num_predict": 4, **options}}
    return httpx.post(d.url + "/api/generate", json={**body, "stream": False}, timeout=120)


def loaded(d: Daemon) -> dict[str, str]:
    return {m["name"]: m["kv_cache_type"] for m in httpx.get(d.url + "/api/ps", timeout=10).json()["models"]}


def test_the_daemons_kv_cache_type_loads_a_model_and_it_answers(d: Daemon) -> None:
    answer = generate(d, HEADS, temperature=0)
    assert answer.status_code == 200, answer.text
    assert answer.json()["eval_count"] == 4
    assert loaded(d)[f"{HEADS}:latest"] == "q8_0"
    ps = d.cli("ps")
    assert ps.returncode == 0 and "(q8_0)" in ps.stdout, ps.stdout


def test_a_model_whose_heads_it_does_not_divide_keeps_f16(d: Daemon) -> None:
    answer = generate(d, STORIES, temperature=0)
    assert answer.status_code == 200, answer.text
    assert answer.json()["eval_count"] == 4
    assert loaded(d)[f"{STORIES}:latest"] == "f16"
    assert d.log().count("LOCALLLM_KV_CACHE_TYPE=q8_0 does not fit a model") == 1
    asked = generate(d, STORIES, kv_cache_type="q4_0")
    assert asked.status_code == 400
    error = asked.json()["error"]
    assert "options.kv_cache_type q4_0 does not fit this model" in error and "heads hold 8" in error


def test_the_option_and_the_modelfile_parameter_override_it(d: Daemon) -> None:
    assert generate(d, HEADS, kv_cache_type="f16").status_code == 200
    assert loaded(d)[f"{HEADS}:latest"] == "f16", "the request's option"
    body = {"model": "heads-q4", "from": HEADS, "parameters": {"kv_cache_type": "q4_0"}}
    assert httpx.post(d.url + "/api/create", json=body, timeout=60).status_code == 200
    assert generate(d, "heads-q4").status_code == 200
    assert loaded(d)["heads-q4:latest"] == "q4_0", "the Modelfile's PARAMETER"
    bad = generate(d, HEADS, kv_cache_type="q5_1")
    assert bad.status_code == 400 and "options.kv_cache_type must be one of f16, q8_0, q4_0" in bad.json()["error"]


def test_flash_attention_off_refuses_a_quantised_kv_cache(tmp_path: Path, kv_hub: HubStub) -> None:
    with pytest.raises(RuntimeError, match="LOCALLLM_KV_CACHE_TYPE='q8_0' needs flash attention"):
        start_daemon(tmp_path, kv_hub, LOCALLLM_FLASH_ATTENTION="off", LOCALLLM_KV_CACHE_TYPE="q8_0")
    daemon = start_daemon(tmp_path, kv_hub, LOCALLLM_FLASH_ATTENTION="off")
    try:
        assert daemon.cli("pull", HEADS).returncode == 0
        refused = generate(daemon, HEADS, kv_cache_type="q8_0")
        assert refused.status_code == 400
        assert (
            "options.kv_cache_type q8_0 needs flash attention, but LOCALLLM_FLASH_ATTENTION is off"
            in (refused.json()["error"])
        )
        assert generate(daemon, HEADS).status_code == 200, "f16 needs none"
        assert loaded(daemon)[f"{HEADS}:latest"] == "f16"
    finally:
        stop_daemon(daemon)
