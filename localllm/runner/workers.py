"""The daemon's view of its RPC workers: whether each answers, and how much memory it has free.

No llama.cpp here: each worker is asked by a short child process (`python -I -m localllm.runner.rpcprobe
host:port`) that adds it through ggml's RPC backend and reads its devices' memory, as a runner would. A
worker serves one client at a time, so one that is busy with another daemon's model does not answer within
the timeout: it counts as unusable, as one that is down does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..config.values import split_endpoint
from ..domain.child import python_command

PROBE_TIMEOUT = 15.0  # seconds a worker has to say how much memory it has


@dataclass(frozen=True)
class WorkerMemory:
    """An RPC worker's free and total memory (its devices together), or why it cannot be used."""

    endpoint: str
    free: int = 0
    total: int = 0
    error: str | None = None


async def listening(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at `endpoint` (host:port)."""
    try:
        host, port = split_endpoint(endpoint)
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def probe(endpoints: Sequence[str], timeout: float = PROBE_TIMEOUT) -> list[WorkerMemory]:
    """Each worker's memory, asked all at once."""
    return list(await asyncio.gather(*(_probe(endpoint, timeout) for endpoint in endpoints)))


async def _probe(endpoint: str, timeout: float) -> WorkerMemory:
    if not await listening(endpoint):
        return WorkerMemory(endpoint, error="nothing listens there")
    proc = await asyncio.create_subprocess_exec(
        *python_command("localllm.runner.rpcprobe", endpoint),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return WorkerMemory(endpoint, error=f"no answer within {timeout:.0f}s (busy serving another daemon?)")
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
        if "error" in answer:
            return WorkerMemory(endpoint, error=str(answer["error"]))
        return WorkerMemory(endpoint, int(answer["free"]), int(answer["total"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return WorkerMemory(endpoint, error=f"the probe failed (exit status {proc.returncode})")
