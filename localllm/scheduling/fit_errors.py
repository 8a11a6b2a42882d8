"""Why a model cannot be loaded here: the errors the scheduler raises when a model does not fit the machine
(or does not fit without RPC workers that cannot be used), each saying what it needs and what would help."""

from __future__ import annotations

from ..domain.errors import EngineError, InvalidRequest
from ..observability.machine import Memory
from ..runner.workers import WorkerMemory
from .memory import Estimate, Placement, format_bytes


def too_big(name: str, est: Estimate, placement: Placement, memory: Memory) -> Exception:
    """The error for a model that cannot fit the machine: the request's fault (a 400 naming `num_ctx`) when
    the model would fit with a smaller context, else the model's (it is larger than the machine)."""
    on_gpu = f" besides {format_bytes(placement.vram)} on the GPU" if placement.vram else ""
    message = (
        f"model '{name}' needs {format_bytes(placement.ram)} of system memory{on_gpu} "
        f"(weights {format_bytes(est.weights)}, KV cache {format_bytes(est.kv)}, compute {format_bytes(est.compute)}), "
        f"but only {format_bytes(memory.ram_total)} is installed ({format_bytes(memory.ram_free)} available); "
        "a smaller num_ctx or LOCALLLM_NUM_PARALLEL shrinks the KV cache"
    )
    if est.weights + est.compute < memory.ram_total + memory.vram_total:
        return InvalidRequest(f"options.num_ctx: {message}", field="options.num_ctx")
    return EngineError(message)


def workers_lost(name: str, est: Estimate, lost: list[WorkerMemory]) -> EngineError:
    """The error for a model that does not fit without the RPC workers that cannot be used."""
    which = "; ".join(f"{w.endpoint}: {w.error}" for w in lost)
    return EngineError(
        f"model '{name}' ({format_bytes(est.total)}) does not fit without the RPC workers that cannot be used "
        f"({which}): start them again, or leave them out of LOCALLLM_RPC_SERVERS",
        kind="worker",
    )
