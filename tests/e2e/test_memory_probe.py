"""The memory probe with the programs it runs: a stand-in `nvidia-smi` (a shell script) that answers, fails or
is missing (the probe's arithmetic: tests/unit/test_memory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm.observability.machine import Memory, MiB, SystemMemory


def fake_nvidia_smi(tmp_path: Path, body: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_system_memory_reads_meminfo_and_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")
    smi = fake_nvidia_smi(tmp_path, 'echo "0, 100, 200"')
    gpu = Memory(2 << 20, 1 << 20, 200 * MiB, 100 * MiB, gpus=((100 * MiB, 200 * MiB),))
    assert SystemMemory(meminfo=meminfo, nvidia_smi=smi).snapshot() == gpu
    assert SystemMemory(meminfo=meminfo, nvidia_smi=None).snapshot() == Memory(2 << 20, 1 << 20)
    broken = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert not SystemMemory(meminfo=meminfo, nvidia_smi=broken).snapshot().has_gpu
    assert not SystemMemory(meminfo=meminfo, nvidia_smi="no-such-nvidia-smi").snapshot().has_gpu
