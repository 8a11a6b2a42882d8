"""RPC workers without llama.cpp: LOCALLLM_RPC_SERVERS, the per-model `rpc_servers` option, the split read
from llama.cpp's load log, and its round trip through the runner protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from localllm.config import Settings
from localllm.config.values import parse_rpc_servers, split_endpoint
from localllm.domain.errors import ConfigError, EngineError, InvalidRequest
from localllm.domain.modelinfo import DeviceSplit
from localllm.domain.options import parse_options
from localllm.modelstore.modelfile import parse_parameter
from localllm.observability.machine import Memory
from localllm.runner.protocol import LoadSpec, RunnerInfo, decode_event, encode_event
from localllm.runner.split import KnownDevice, Split
from localllm.runner.workers import WorkerMemory
from localllm.scheduling.memory import GiB, ModelShape
from localllm.scheduling.refs import ModelRef
from localllm.scheduling.scheduler import Scheduler

from ..fakes import FakeFactory


def test_no_servers_by_default() -> None:
    assert Settings.from_env({}).rpc_servers == ()


@pytest.mark.parametrize(
    ("raw", "servers"),
    [
        ("10.0.0.2:50052", ("10.0.0.2:50052",)),
        (" 10.0.0.2:50052 , gpu-box:50053,", ("10.0.0.2:50052", "gpu-box:50053")),
        ("a:1,a:1,b:2", ("a:1", "b:2")),  # repeats dropped, order kept
        ("[::1]:50052", ("[::1]:50052",)),
        ("", ()),
        ("none", ()),
        ("NONE", ()),
    ],
)
def test_servers_parse(raw: str, servers: tuple[str, ...]) -> None:
    assert Settings.from_env({"LOCALLLM_RPC_SERVERS": raw}).rpc_servers == servers


@pytest.mark.parametrize("raw", ["10.0.0.2", "10.0.0.2:", ":50052", "host:0", "host:65536", "host:port", "a b:1"])
def test_bad_server_is_named(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"LOCALLLM_RPC_SERVERS": f"127.0.0.1:1,{raw}"})
    assert "LOCALLLM_RPC_SERVERS" in str(err.value) and repr(raw.strip()) in str(err.value)


def test_endpoint_parts() -> None:
    assert split_endpoint("127.0.0.1:50052") == ("127.0.0.1", 50052)
    assert split_endpoint("[::1]:7") == ("::1", 7)
    with pytest.raises(ValueError):
        split_endpoint("nohost")


def test_option_and_parameter_take_a_string() -> None:
    assert parse_options({"rpc_servers": "a:1"}).rpc_servers == "a:1"
    assert parse_parameter("rpc_servers", "a:1,b:2") == "a:1,b:2"
    with pytest.raises(InvalidRequest) as err:
        parse_options({"rpc_servers": 5})
    assert err.value.field == "options.rpc_servers"
    assert parse_rpc_servers("a:1, b:2", name="options.rpc_servers") == ("a:1", "b:2")


def test_load_spec_carries_the_servers() -> None:
    spec = LoadSpec("/m.gguf", 512, rpc_servers=("a:1", "b:2"))
    assert LoadSpec.from_argument(spec.to_argument()) == spec
    assert LoadSpec.from_argument(LoadSpec("/m.gguf", 512).to_argument()).rpc_servers == ()


LOAD_LOG = """\
load_tensors: layer   0 assigned to device CPU, is_swa = 0
load_tensors: layer   1 assigned to device RPC0, is_swa = 0
load_tensors: layer   2 assigned to device RPC0, is_swa = 0
load_tensors: layer   3 assigned to device RPC1, is_swa = 0
load_tensors: layer   4 assigned to device RPC1, is_swa = 0
load_tensors: offloaded 4/5 layers to GPU
load_tensors:   CPU_Mapped model buffer size =     0.50 MiB
load_tensors: RPC0[127.0.0.1:50052] model buffer size =     2.00 MiB
load_tensors: RPC0[127.0.0.1:50053] model buffer size =     3.00 MiB
llama_kv_cache: RPC0[127.0.0.1:50052] KV buffer size =     1.00 MiB
llama_kv_cache: RPC0[127.0.0.1:50053] KV buffer size =     1.00 MiB
sched_reserve:        CPU compute buffer size =     9.00 MiB
"""


def test_split_adds_up_layers_and_buffers_per_device() -> None:
    known = [
        KnownDevice("RPC0", "127.0.0.1:50052", 0, free=100 << 20, total=200 << 20),
        KnownDevice("RPC1", "127.0.0.1:50053", 0, free=50 << 20, total=200 << 20),
        KnownDevice("CPU"),
    ]
    split = Split(known)
    for line in LOAD_LOG.splitlines(keepends=True):
        split.feed(line)
    assert split.shares() == (
        DeviceSplit("RPC0", "127.0.0.1:50052", 2, 3 << 20, 100 << 20, 200 << 20),
        DeviceSplit("RPC1", "127.0.0.1:50053", 2, 4 << 20, 50 << 20, 200 << 20),
        DeviceSplit("CPU", "", 1, 1 << 19),  # the compute buffer is not the model's
    )


def test_runner_info_round_trip_with_devices() -> None:
    info = RunnerInfo(n_ctx=256, devices=(DeviceSplit("RPC0", "h:1", 9, 1234, 5, 6),), workers_lost=("h:2 (refused)",))
    _, back = decode_event(encode_event(None, info))
    assert back == info


# -- the scheduler over fake runners and fake workers -------------------------------------------------------


class FakeWorkers:
    """Answers as `runner.workers.probe` does: each worker's memory, or why it cannot be used."""

    def __init__(self, **answers: WorkerMemory) -> None:
        self.answers = answers
        self.asked: list[tuple[str, ...]] = []

    async def __call__(self, endpoints: Sequence[str]) -> list[WorkerMemory]:
        self.asked.append(tuple(endpoints))
        return [self.answers[e] for e in endpoints]


class Ram:
    def __init__(self, total: int) -> None:
        self.memory = Memory(ram_total=total, ram_free=total)

    def snapshot(self) -> Memory:
        return self.memory


def split_scheduler(*answers: WorkerMemory, ram: int = 4 * GiB) -> tuple[Scheduler, FakeFactory, FakeWorkers]:
    """A scheduler on a machine of `ram` bytes (no GPU) whose RPC workers answer `answers`."""
    factory, workers = FakeFactory(), FakeWorkers(**{w.endpoint: w for w in answers})
    return Scheduler(factory=factory, memory=Ram(ram), gpu_overhead=0, workers=workers), factory, workers


def split_ref(path: str, servers: tuple[str, ...], size: int) -> ModelRef:
    spec = LoadSpec(model_path=path, n_ctx=128, rpc_servers=servers)
    shape = ModelShape(block_count=8, embedding_length=64, head_count=4)
    return ModelRef(path, "sha256:" + "0" * 64, spec, size, shape=shape)


def test_workers_memory_makes_room_for_a_model_larger_than_this_machine() -> None:
    async def scenario() -> None:
        sched, factory, workers = split_scheduler(
            WorkerMemory("a", 8 * GiB, 8 * GiB), WorkerMemory("b", 8 * GiB, 8 * GiB)
        )
        async with sched.use(split_ref("big", ("a", "b"), 10 * GiB), keep_alive=60):
            pass
        spec = factory.runners[0].spec
        assert spec.rpc_servers == ("a", "b") and spec.num_gpu == 9  # every layer and the output on the workers
        assert workers.asked == [("a", "b")]
        await sched.close()

    asyncio.run(scenario())


def test_an_unusable_worker_is_left_out_when_the_model_still_fits() -> None:
    async def scenario() -> None:
        sched, factory, _ = split_scheduler(WorkerMemory("a", 8 * GiB, 8 * GiB), WorkerMemory("b", error="refused"))
        async with sched.use(split_ref("m", ("a", "b"), 6 * GiB), keep_alive=60):
            pass
        assert factory.runners[0].spec.rpc_servers == ("a",)
        await sched.close()

    asyncio.run(scenario())


def test_a_model_that_does_not_fit_without_a_lost_worker_is_refused_saying_so() -> None:
    async def scenario() -> None:
        sched, factory, _ = split_scheduler(WorkerMemory("a", 4 * GiB, 4 * GiB), WorkerMemory("b", error="refused"))
        with pytest.raises(EngineError) as err:
            async with sched.use(split_ref("big", ("a", "b"), 10 * GiB), keep_alive=60):
                pass
        assert err.value.kind == "worker"
        assert "b: refused" in str(err.value) and "does not fit" in str(err.value)
        assert not factory.runners
        await sched.close()

    asyncio.run(scenario())


def test_a_model_on_the_same_workers_is_unloaded_first() -> None:
    async def scenario() -> None:
        sched, factory, _ = split_scheduler(WorkerMemory("a", 8 * GiB, 8 * GiB), ram=64 * GiB)
        for name in ("one", "two"):
            async with sched.use(split_ref(name, ("a",), GiB), keep_alive=600):
                pass
        assert [m.name for m in sched.loaded()] == ["two"]  # a worker serves one runner at a time
        assert factory.runners[0].stopped
        await sched.close()

    asyncio.run(scenario())


def test_ps_shows_where_a_split_model_computes() -> None:
    from localllm_cli.render import split_lines, split_processor

    remote = [{"name": "RPC0", "where": "a:1", "layers": 3, "size": 2048, "free": 1 << 30}]
    local = {"name": "CPU", "where": "local", "layers": 0, "size": 512}
    assert split_processor([*remote, local]) == "100% RPC"
    assert split_processor([*remote, {**local, "layers": 3}]) == "50%/50% local/RPC"
    assert split_processor([{**local, "layers": 2}]) == "100% local"
    heading, table = split_lines("m:latest", [*remote, local])
    assert heading == "m:latest is split across:"
    assert table.splitlines()[1].split() == ["RPC0", "a:1", "3", "2.0", "KB", "1.1", "GB"]
