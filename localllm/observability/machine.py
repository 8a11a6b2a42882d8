"""What this machine has to run models on: RAM from /proc/meminfo, VRAM from `nvidia-smi`. The scheduler
places models by it; a runner bounds its prompt cache's RAM tier by it."""

from __future__ import annotations

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
    """Total and free bytes of system RAM and of GPU memory (all GPUs together; 0 without a GPU)."""

    ram_total: int
    ram_free: int
    vram_total: int = 0
    vram_free: int = 0

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
        )

    def plus(self, ram: int, vram: int) -> Memory:
        """What would be free once models holding `ram` and `vram` bytes were unloaded."""
        return Memory(
            ram_total=self.ram_total,
            ram_free=min(self.ram_total, self.ram_free + ram),
            vram_total=self.vram_total,
            vram_free=min(self.vram_total, self.vram_free + vram),
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


def parse_nvidia_smi(text: str, visible: str | None = None) -> tuple[int, int]:
    """(free, total) bytes over the GPUs in `nvidia-smi --query-gpu=index,memory.free,memory.total` CSV.

    `visible` is CUDA_VISIBLE_DEVICES: when it lists indices, only those GPUs count. Lines that do not
    parse (`[N/A]` on some devices) are skipped.
    """
    wanted: set[str] | None = None
    if visible is not None and visible.strip():
        ids = [v.strip() for v in visible.split(",")]
        if all(i.isdigit() for i in ids):
            wanted = set(ids)
    free = total = 0
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue
        if wanted is not None and parts[0] not in wanted:
            continue
        free += int(parts[1]) * MiB
        total += int(parts[2]) * MiB
    return free, total


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
        vram_free, vram_total = self._vram()
        return Memory(ram_total=ram_total, ram_free=ram_free, vram_total=vram_total, vram_free=vram_free)

    def _ram(self) -> tuple[int, int]:
        try:
            return parse_meminfo(self.meminfo.read_text())
        except (OSError, ValueError):
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page

    def _vram(self) -> tuple[int, int]:
        if self.nvidia_smi is None:
            return 0, 0
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
            return 0, 0
        return parse_nvidia_smi(done.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))
