"""Every Python child localllm starts runs isolated, through the one command line in localllm/domain/child.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from localllm.domain.child import llama_environment, python_command

from ..conftest import ROOT


def test_a_child_runs_isolated_from_the_callers_directory_and_python_variables() -> None:
    assert python_command("localllm.runner.main", "{}") == [sys.executable, "-I", "-m", "localllm.runner.main", "{}"]


def test_a_child_loading_llama_cpp_numbers_the_gpus_as_nvidia_smi_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setenv("LOCALLLM_PROBE", "kept")
    env = llama_environment()
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["LOCALLLM_PROBE"] == "kept"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    assert llama_environment()["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST", "the operator's choice stands"


SOURCES = sorted(p for folder in ("localllm", "cli") for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_builds_a_python_command_line_of_its_own(path: Path) -> None:
    """`sys.executable` with "-m" anywhere but domain/child.py is a child started without `-I`."""
    if path == ROOT / "localllm" / "domain" / "child.py":
        return
    tree = ast.parse(path.read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    executable = any(
        isinstance(n, ast.Attribute)
        and n.attr == "executable"
        and isinstance(n.value, ast.Name)
        and n.value.id == "sys"
        for n in ast.walk(tree)
    )
    assert not (executable and "-m" in strings), "start Python children with localllm.domain.child.python_command"
