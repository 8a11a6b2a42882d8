"""What this machine has to run models on: RAM from /proc/meminfo, VRAM from `nvidia-smi`. The scheduler
places models by it; a runner bounds its prompt cache's RAM tier by it."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("localllm.memory")

MiB = 1 << 20


@dataclass(frozen=True)
class Memory:
    """Total and free bytes of system RAM and of GPU memory (all GPUs together; 0 without a GPU), and each GPU's
    (free, total) as the driver reports them, in CUDA's numbering."""

    ram_total: int
    ram_free: int
    vram_total: int = 0
    vram_free: int = 0
    gpus: tuple[tuple[int, int], ...] = ()

    @property
    def has_gpu(self) -> bool:
        return self.vram_total > 0

    def minus(self, ram: int, vram: int) -> Memory:
        """What is left for one more model once models holding `ram` and `vram` bytes have what they need.

        The free figures come from the OS and the driver and already count loaded models, but only as far
        as they have touched their memory (mmapped weights count as page cache, so as free): the tighter of
        "free now" and "total less what loaded models need" is what a new model may take.
        """
        return Memory(
            ram_total=self.ram_total,
            ram_free=max(0, min(self.ram_free, self.ram_total - ram)),
            vram_total=self.vram_total,
            vram_free=max(0, min(self.vram_free, self.vram_total - vram)),
            gpus=self.gpus,
        )

    def on_gpu(self, index: int) -> Memory:
        """This memory with GPU `index`'s only, for a model loaded whole on that GPU (the `main_gpu` option): its
        free bytes are the tighter of that GPU's free now and what all of them have left for one more model.
        Unchanged where that GPU's memory is unknown."""
        if not 0 <= index < len(self.gpus) or self.gpus[index][1] <= 0:
            return self
        free, total = self.gpus[index]
        return dataclasses.replace(
            self, vram_total=total, vram_free=min(free, self.vram_free), gpus=(self.gpus[index],)
        )

    def plus(self, ram: int, vram: int) -> Memory:
        """What would be free once models holding `ram` and `vram` bytes were unloaded."""
        return Memory(
            ram_total=self.ram_total,
            ram_free=min(self.ram_total, self.ram_free + ram),
            vram_total=self.vram_total,
            vram_free=min(self.vram_total, self.vram_free + vram),
            gpus=self.gpus,
        )


class MemoryProbe(Protocol):
    def snapshot(self) -> Memory: ...


def parse_meminfo(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from the text of /proc/meminfo."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemTotal" not in values:
        raise ValueError("no MemTotal in /proc/meminfo")
    total = values["MemTotal"]
    available = values.get("MemAvailable", values.get("MemFree", 0) + values.get("Cached", 0))
    return total, available


def parse_nvidia_smi_gpus(text: str, visible: str | None = None) -> tuple[tuple[int, int], ...]:
    """(free, total) bytes of each GPU in `nvidia-smi --query-gpu=index,memory.free,memory.total` CSV, in the
    order CUDA numbers them for a process (the `main_gpu` option's index).

    `visible` is CUDA_VISIBLE_DEVICES: when it lists indices, only those GPUs count, in its order; set but empty,
    none does (as CUDA reads it). A GPU whose memory does not parse (`[N/A]` on some devices) is (0, 0): it
    keeps its place in the numbering.
    """
    found: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        known = parts[1].isdigit() and parts[2].isdigit()
        found[parts[0]] = (int(parts[1]) * MiB, int(parts[2]) * MiB) if known else (0, 0)
    order = list(found)
    if visible is not None and not visible.strip():
        return ()
    if visible is not None:
        ids = [v.strip() for v in visible.split(",")]
        if all(i.isdigit() for i in ids):
            order = [i for i in ids if i in found]
    return tuple(found[i] for i in order)


class SystemMemory:
    """This machine's memory: RAM from /proc/meminfo (else sysconf), VRAM from `nvidia-smi` when present."""

    def __init__(
        self, *, meminfo: Path = Path("/proc/meminfo"), nvidia_smi: str | None = "nvidia-smi", timeout: float = 5.0
    ) -> None:
        self.meminfo = meminfo
        self.nvidia_smi = shutil.which(nvidia_smi) if nvidia_smi else None
        self.timeout = timeout

    def snapshot(self) -> Memory:
        ram_total, ram_free = self._ram()
        gpus = self._gpus()
        return Memory(
            ram_total=ram_total,
            ram_free=ram_free,
            vram_total=sum(total for _, total in gpus),
            vram_free=sum(free for free, _ in gpus),
            gpus=gpus,
        )

    def _ram(self) -> tuple[int, int]:
        try:
            return parse_meminfo(self.meminfo.read_text())
        except (OSError, ValueError):
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page

    def _gpus(self) -> tuple[tuple[int, int], ...]:
        if self.nvidia_smi is None:
            return ()
        try:
            done = subprocess.run(
                [self.nvidia_smi, "--query-gpu=index,memory.free,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("nvidia-smi failed, assuming no GPU: %s", exc)
            return ()
        return parse_nvidia_smi_gpus(done.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))
