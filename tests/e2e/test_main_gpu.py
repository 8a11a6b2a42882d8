"""`main_gpu` through a real daemon on a machine whose `nvidia-smi` lists two GPUs (a stand-in script: this
machine has none, and neither does the runner's llama.cpp). The index is checked against those GPUs; a valid
one loads (the runner puts the model on that GPU only where llama.cpp has one). The choice itself:
tests/unit/test_main_gpu.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with
from .test_memory_probe import fake_nvidia_smi

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"


@pytest.fixture(scope="module")
def two_gpus(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("main_gpu")
    smi = fake_nvidia_smi(tmp, 'printf "0, 20000, 24564\\n1, 7000, 8192\\n"')
    path = f"{Path(smi).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with daemon_with(tmp, hub, [STORIES_REPO], PATH=path, CUDA_VISIBLE_DEVICES="0,1") as d:
        yield d


def generate(d: Daemon, main_gpu: int) -> httpx.Response:
    body = {"model": STORIES, "prompt": "Once upon a time", "stream": False}
    body["options"] = {"temperature": 0, "num_predict": 8, "main_gpu": main_gpu}
    return httpx.post(d.url + "/api/generate", json=body, timeout=120)


def test_an_index_past_the_gpus_is_a_400_naming_the_field(two_gpus: Daemon) -> None:
    r = generate(two_gpus, 2)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "options.main_gpu is 2, but this machine has 2 GPUs (0 to 1)"
    assert not two_gpus.runner_pids(), "refused before any load"


def test_a_gpu_there_loads_and_answers(two_gpus: Daemon) -> None:
    r = generate(two_gpus, 1)
    assert r.status_code == 200, r.text
    assert r.json()["response"] and two_gpus.runner_pids()


def test_without_a_gpu_the_option_does_nothing_and_shares_the_runner(daemon: Daemon) -> None:
    """This machine has no GPU: `main_gpu 0` (which some clients send with every request) loads no second runner."""
    assert daemon.cli("pull", STORIES).returncode == 0
    first = generate(daemon, 0)
    assert first.status_code == 200, first.text
    pids = daemon.runner_pids()
    body = {
        "model": STORIES,
        "prompt": "Once upon a time",
        "stream": False,
        "options": {"temperature": 0, "num_predict": 8},
    }
    plain = httpx.post(daemon.url + "/api/generate", json=body, timeout=120)
    assert plain.status_code == 200 and plain.json()["response"] == first.json()["response"]
    assert daemon.runner_pids() == pids and len(pids) == 1


def test_a_runner_numbers_the_gpus_as_nvidia_smi_does(two_gpus: Daemon) -> None:
    """main_gpu's index, CUDA_VISIBLE_DEVICES and the memory the scheduler reads per GPU mean the same GPU."""
    assert generate(two_gpus, 0).status_code == 200
    (pid,) = two_gpus.runner_pids()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"CUDA_DEVICE_ORDER=PCI_BUS_ID" in environ
