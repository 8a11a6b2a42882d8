"""install.sh: its interface and its GPU detection, checked without installing anything.

CI runs the real install (`.ci/run`); LOCALLLM_SLOW_INSTALL_TEST=1 also runs one here, into a temporary prefix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

SCRIPT = ROOT / "install.sh"
BASH = shutil.which("bash") or "/bin/bash"
OPTIONS = ("--prefix", "--bin-dir", "--no-link", "--dev", "--cpu", "--cuda", "--service", "--python", "--uninstall")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def test_syntax() -> None:
    assert subprocess.run([BASH, "-n", str(SCRIPT)]).returncode == 0


def test_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


def test_help_lists_every_option() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ./install.sh")
    for option in OPTIONS:
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bogus",), "unknown option: --bogus"),
        (("--prefix",), "--prefix needs a directory"),
        (("--bin-dir",), "--bin-dir needs a directory"),
        (("--python",), "--python needs an interpreter"),
    ],
)
def test_bad_arguments_fail_clearly(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode != 0
    assert f"ERROR: {message}" in result.stderr
    assert result.stdout == ""


def test_missing_python_is_named() -> None:
    result = run("--python", "/nonexistent/python3", "--no-link")
    assert result.returncode != 0
    assert "/nonexistent/python3 not found" in result.stderr


def test_too_old_python_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "python2"
    old.write_text(f'#!/bin/sh\nexec {sys.executable} -c "import sys; sys.exit(1)"\n')
    old.chmod(0o755)
    result = run("--python", str(old), "--no-link", "--prefix", str(tmp_path / "venv"))
    assert result.returncode != 0
    assert "needs Python 3.10 or newer" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_a_truncated_download_runs_nothing() -> None:
    """Everything is in functions and only the last line calls main, so any prefix of the file does nothing."""
    text = SCRIPT.read_text()
    assert text.rstrip().splitlines()[-1] == 'main "$@"'
    lines = text.splitlines(keepends=True)
    for cut in range(0, len(lines) - 1, max(1, len(lines) // 25)):
        result = subprocess.run(
            [BASH, "-s"], input="".join(lines[:cut]), capture_output=True, text=True, env={"PATH": "/nonexistent"}
        )
        assert result.stdout == "", f"cut at line {cut} ran something"
        assert "command not found" not in result.stderr, f"cut at line {cut} ran something"


def choose_accel(
    tmp_path: Path, *, gpu: str | None, nvcc: bool, accel: str = "auto"
) -> subprocess.CompletedProcess[str]:
    """Run install.sh's choose_accel with stand-ins for nvidia-smi and nvcc (and nothing else) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("grep", "head", "cut"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    if gpu is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!{BASH}\n{gpu}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    if nvcc:
        (bin_dir / "nvcc").write_text(f"#!{BASH}\necho 'Cuda compilation tools, release 12.4'\n")
        (bin_dir / "nvcc").chmod(0o755)
    functions = SCRIPT.read_text().rstrip().removesuffix('main "$@"')
    script = f'{functions}\nACCEL={accel}\nchoose_accel\necho "ACCEL=$ACCEL"\n'
    return subprocess.run([BASH, "-c", script], capture_output=True, text=True, env={"PATH": str(bin_dir)}, timeout=30)


H100 = "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0c9a6e1e-5b2b-4a4e-8f36-6b6b0d1c2a11)'"
NO_DRIVER = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9"


@pytest.mark.parametrize(
    ("gpu", "nvcc", "accel", "expected", "reason"),
    [
        (H100, True, "auto", "cuda", "with CUDA: found GPU 0: NVIDIA H100"),
        (H100, False, "auto", "cpu", "nvcc (the CUDA toolkit) is not"),
        (None, True, "auto", "cpu", "nvcc is present but nvidia-smi lists no NVIDIA GPU"),
        (NO_DRIVER, True, "auto", "cpu", "nvcc is present but nvidia-smi lists no NVIDIA GPU"),
        (None, False, "auto", "cpu", "no NVIDIA GPU found"),
        (H100, True, "cpu", "cpu", "for the CPU (--cpu)"),
        (None, True, "cuda", "cuda", "with CUDA (--cuda)"),
    ],
)
def test_gpu_detection_needs_a_gpu_and_nvcc(
    tmp_path: Path, gpu: str | None, nvcc: bool, accel: str, expected: str, reason: str
) -> None:
    result = choose_accel(tmp_path, gpu=gpu, nvcc=nvcc, accel=accel)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"ACCEL={expected}"
    assert reason in result.stdout


def test_cuda_without_nvcc_fails_clearly(tmp_path: Path) -> None:
    result = choose_accel(tmp_path, gpu=H100, nvcc=False, accel="cuda")
    assert result.returncode != 0
    assert "ERROR: --cuda needs nvcc" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean() -> None:
    files = [
        str(SCRIPT),
        str(ROOT / "scripts" / "test"),
        str(ROOT / "scripts" / "test-models"),
        str(ROOT / ".ci" / "run"),
    ]
    result = subprocess.run(["shellcheck", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(
    os.environ.get("LOCALLLM_SLOW_INSTALL_TEST") != "1", reason="set LOCALLLM_SLOW_INSTALL_TEST=1 for a real install"
)
@pytest.mark.timeout(3600)
def test_real_install_twice_then_uninstall(tmp_path: Path) -> None:
    prefix, bin_dir = tmp_path / "venv", tmp_path / "bin"
    args = ("--cpu", "--prefix", str(prefix), "--bin-dir", str(bin_dir))
    first = run(*args, timeout=3000)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "localllm 0" in first.stdout and "is installed" in first.stdout
    imports = subprocess.run([str(prefix / "bin" / "python"), "-c", "import localllm, llama_cpp"])
    assert imports.returncode == 0
    assert (bin_dir / "localllm").resolve() == (prefix / "bin" / "localllm").resolve()

    again = run(*args, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Updating the virtual environment" in again.stdout
    assert "llama-cpp-python (CPU build with RPC) is already installed" in again.stdout

    gone = run("--uninstall", *args, timeout=60)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not prefix.exists()
    assert not (bin_dir / "localllm").is_symlink()
