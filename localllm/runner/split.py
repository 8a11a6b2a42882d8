"""Where a loaded model's layers and memory went, per device, read from llama.cpp's load log.

llama.cpp says, while it loads, which device each layer is assigned to (`load_tensors: layer 3 assigned to
device RPC0, ...`, a debug line) and how large each buffer is (`load_tensors: RPC0[127.0.0.1:50052] model
buffer size = 1.20 MiB`, `llama_kv_cache: CPU KV buffer size = ...`). `Split` collects those lines and
`shares` adds them up per device: what `/api/ps` and `localllm ps` show for a model split across RPC workers.
No llama.cpp here: the engine feeds the lines, the tests feed text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..domain.modelinfo import DeviceSplit

MiB = 1 << 20
_LAYER = re.compile(r"layer\s+\d+ assigned to device (\S+?),")
_BUFFER = re.compile(r"(\S+)\s+(?:model|KV) buffer size =\s*([\d.]+) MiB")
_RPC_BUFFER = re.compile(r"RPC(\d+)\[(.+)\]$")


def from_message(raw: dict[str, Any]) -> DeviceSplit:
    """A `DeviceSplit` from its fields (the runner protocol sends them as an object)."""
    return DeviceSplit(
        str(raw["name"]),
        str(raw.get("where", "")),
        int(raw.get("layers", 0)),
        int(raw.get("memory", 0)),
        int(raw.get("free", 0)),
        int(raw.get("total", 0)),
    )


@dataclass(frozen=True)
class KnownDevice:
    """A device the load may use: its name, its RPC worker and index there ("" and 0 for a local one)."""

    name: str
    where: str = ""
    index: int = 0
    free: int = 0
    total: int = 0


class Split:
    """The load log's lines about layers and buffers, added up per device."""

    def __init__(self, known: list[KnownDevice]) -> None:
        self._known = known
        self._layers: dict[str, int] = {}
        self._memory: dict[str, int] = {}

    def feed(self, line: str) -> None:
        match = _LAYER.search(line)
        if match:
            name = match.group(1)
            self._layers[name] = self._layers.get(name, 0) + 1
            return
        match = _BUFFER.search(line)
        if match:
            name = self._device_of(match.group(1))
            self._memory[name] = self._memory.get(name, 0) + int(float(match.group(2)) * MiB)

    def _device_of(self, buffer: str) -> str:
        """The device a buffer lives on: an RPC buffer names its worker and index there; host buffers
        (CPU_Mapped, CPU_REPACK, CUDA_Host) are in this machine's RAM."""
        rpc = _RPC_BUFFER.match(buffer)
        if rpc:
            index, where = int(rpc.group(1)), rpc.group(2)
            for dev in self._known:
                if dev.where == where and dev.index == index:
                    return dev.name
            return buffer
        if buffer.startswith("CPU") or buffer.endswith("_Host"):
            return "CPU"
        return buffer

    def shares(self) -> tuple[DeviceSplit, ...]:
        """Each device that holds part of the model: the RPC workers' first, then this machine's."""
        names = [n for n in {**self._layers, **self._memory} if self._layers.get(n) or self._memory.get(n)]
        known = {d.name: d for d in self._known}
        order = {d.name: i for i, d in enumerate(self._known)}
        names.sort(key=lambda n: (n not in known or not known[n].where, order.get(n, len(order)), n))
        out = []
        for name in names:
            dev = known.get(name, KnownDevice(name))
            out.append(
                DeviceSplit(name, dev.where, self._layers.get(name, 0), self._memory.get(name, 0), dev.free, dev.total)
            )
        return tuple(out)
