"""The `main_gpu` option: the whole model on one GPU, as Ollama and llama-server's `--main-gpu` with
`--split-mode none` do. Each GPU's memory from nvidia-smi, the option checked against the GPUs there, and the
scheduler placing such a model by that GPU's memory alone. (The runner's side, llama.cpp's split mode, needs two
GPUs to see; its field names are checked by the e2e loads, runner/cstruct.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from localllm.domain.errors import InvalidRequest
from localllm.domain.options import parse_options
from localllm.observability.machine import Memory, parse_nvidia_smi_gpus
from localllm.scheduling.memory import GiB, MiB
from localllm.scheduling.scheduler import Scheduler
from localllm.service.loadref import main_gpu

from .test_scheduler import SHAPE, FakeMemory, GpuFactory, ref

SMI = "0, 20000, 24564\n1, [N/A], [N/A]\n2, 1000, 8192\n"


def test_each_gpu_in_cudas_numbering() -> None:
    assert parse_nvidia_smi_gpus(SMI) == ((20000 * MiB, 24564 * MiB), (0, 0), (1000 * MiB, 8192 * MiB)), (
        "a GPU whose memory is unknown keeps its place"
    )
    assert parse_nvidia_smi_gpus(SMI, "2,0") == ((1000 * MiB, 8192 * MiB), (20000 * MiB, 24564 * MiB)), (
        "CUDA_VISIBLE_DEVICES: those GPUs, numbered in its order"
    )
    assert parse_nvidia_smi_gpus(SMI, "GPU-1234") == parse_nvidia_smi_gpus(SMI), "UUIDs: not filtered"
    assert parse_nvidia_smi_gpus(SMI, "") == (), "set but empty: CUDA sees no GPU"
    assert parse_nvidia_smi_gpus("") == ()


def two_gpus() -> Memory:
    gpus = ((20 * GiB, 24 * GiB), (3 * GiB, 8 * GiB))
    return Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=32 * GiB, vram_free=23 * GiB, gpus=gpus)


def test_one_gpus_memory() -> None:
    memory = two_gpus()
    one = memory.on_gpu(1)
    assert (one.vram_total, one.vram_free, one.gpus) == (8 * GiB, 3 * GiB, ((3 * GiB, 8 * GiB),))
    assert (one.ram_total, one.ram_free) == (memory.ram_total, memory.ram_free)
    held = memory.minus(0, 20 * GiB).on_gpu(0)  # loaded models hold 20 GiB of the 32, wherever they are
    assert held.vram_free == 12 * GiB, "no more than all the GPUs have left"
    assert memory.on_gpu(5) is memory and Memory(1, 1).on_gpu(0).vram_total == 0
    unknown = replace(memory, gpus=((20 * GiB, 24 * GiB), (0, 0)))
    assert unknown.on_gpu(1) is unknown, "memory unknown: the figures for all of them"


def machine(memory: Memory) -> FakeMemory:
    return FakeMemory(memory)


@pytest.mark.parametrize(
    ("asked", "gpus", "workers", "chosen"),
    [
        (None, 2, (), -1),  # not asked: llama.cpp's layers over every GPU
        (1, 2, (), 1),
        (0, 2, (), 0),
        (0, 1, (), -1),  # one GPU: the model goes there anyway, and one runner serves both
        (3, 0, (), -1),  # no GPU: ignored, as Ollama does (clients send main_gpu 0 by default)
        (1, 2, ("10.0.0.2:50052",), -1),  # split across RPC workers: the layers spread over them
    ],
)
def test_the_option_chooses_only_where_there_is_a_choice(
    asked: int | None, gpus: int, workers: tuple[str, ...], chosen: int
) -> None:
    memory = replace(two_gpus(), gpus=two_gpus().gpus[:gpus])
    assert main_gpu(asked, machine(memory).snapshot, workers) == chosen


def test_an_index_past_the_gpus_is_refused_naming_them() -> None:
    with pytest.raises(InvalidRequest, match=r"options.main_gpu is 2, but this machine has 2 GPUs \(0 to 1\)") as e:
        main_gpu(2, machine(two_gpus()).snapshot, ())
    assert e.value.field == "options.main_gpu"
    one = replace(two_gpus(), gpus=two_gpus().gpus[:1])
    with pytest.raises(InvalidRequest, match=r"has 1 GPU \(index 0\)"):
        main_gpu(1, machine(one).snapshot, ())


def test_a_negative_index_is_refused_by_the_options() -> None:
    with pytest.raises(InvalidRequest, match="main_gpu"):
        parse_options({"main_gpu": -1})


def test_a_model_on_one_gpu_is_placed_by_that_gpus_memory() -> None:
    async def scenario() -> None:
        factory = GpuFactory(32)
        sched = Scheduler(factory=factory, memory=machine(two_gpus()))
        whole = replace(ref("a", size=8 * GiB, shape=SHAPE), spec=replace(ref("a").spec, main_gpu=0))
        async with sched.use(whole, keep_alive=60):
            pass
        small = replace(ref("b", size=8 * GiB, shape=SHAPE), spec=replace(ref("b").spec, main_gpu=1))
        async with sched.use(small, keep_alive=60):
            pass
        # GPU 1: 3 GiB free - 512 MiB overhead - 409.6 MiB compute = 2150.4 MiB: 8 layers of 256.5 MiB
        assert [(s.main_gpu, s.num_gpu) for s in factory.specs] == [(0, 33), (1, 8)]
        await sched.close()

    asyncio.run(scenario())
