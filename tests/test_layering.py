"""Imports only go downward (the layering in README.md): checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import localllm

ROOT = Path(__file__).resolve().parent.parent
LEAVES = {"config", "errors", "types", "names", "modelfile", "gguf", "tools", "thinking", "limits", "__init__"}
CORE = {"store", "hub", "prompt", "sandbox", "renderpool", "memory", "scheduler", "runner", "library", "keys"}
USE_CASES = {"service", "create", "sessions"}
ADAPTERS = {"server", "daemon"}
CLIENT = {"client"}
LEVEL = {
    **dict.fromkeys(LEAVES, 0),
    **dict.fromkeys(CORE, 1),
    **dict.fromkeys(USE_CASES, 2),
    **dict.fromkeys(ADAPTERS, 3),
}


def modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path, package: str) -> set[str]:
    """Top-level names of everything `path` imports, resolving relative imports within `package`."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT / package).with_suffix("").parts
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.add(node.module or "")
            else:
                base = list(rel[: len(rel) - node.level])
                parts = [package, *base, *(node.module.split(".") if node.module else [])]
                if node.module is None:
                    out.update(".".join([*parts, alias.name]) for alias in node.names)
                else:
                    out.add(".".join(parts))
    return out


def owner(module: str) -> str:
    """The localllm module a dotted name lives in (a name from the package itself counts as `__init__`)."""
    parts = module.split(".")
    if len(parts) < 2:
        return "__init__"
    pkg = ROOT / "localllm"
    return parts[1] if (pkg / f"{parts[1]}.py").exists() or (pkg / parts[1]).is_dir() else "__init__"


@pytest.mark.parametrize("path", modules(ROOT / "localllm"), ids=lambda p: str(p.relative_to(ROOT)))
def test_localllm_imports_go_downward(path: Path) -> None:
    me = path.relative_to(ROOT / "localllm").parts[0].removesuffix(".py")
    names = imported(path, "localllm")
    in_runner = me == "runner"
    if not (in_runner and path.name == "engine.py"):  # the one module that loads llama.cpp
        assert not any(n.split(".")[0] == "llama_cpp" for n in names), "llama_cpp belongs to runner/engine.py"
    if me != "server":
        assert not any(n.split(".")[0] == "starlette" for n in names), "starlette belongs under server/"
    if me != "daemon":
        assert "uvicorn" not in {n.split(".")[0] for n in names}, "uvicorn belongs to daemon.py"
    assert "click" not in {n.split(".")[0] for n in names}, "click belongs to cli/"
    ours = {owner(n) for n in names if n.startswith("localllm.") or n == "localllm"}
    if me in CLIENT:
        assert ours <= LEAVES | {"client"}, f"the client may use only leaf modules, not {ours - LEAVES}"
        return
    for other in ours - {me}:
        assert other in LEVEL, f"{me} imports unknown module {other}"
        assert LEVEL[other] <= LEVEL[me], f"{me} (level {LEVEL[me]}) must not import {other} (level {LEVEL[other]})"


@pytest.mark.parametrize("path", modules(ROOT / "cli"), ids=lambda p: str(p.relative_to(ROOT)))
def test_cli_uses_only_the_client_and_leaves(path: Path) -> None:
    names = imported(path, "cli")
    ours = {owner(n) for n in names if n.startswith("localllm.")}
    # daemon only for `serve`, imported inside the command; library (it imports only leaves) for
    # `list --library`, which shows the Modelfiles shipped with the CLI itself; keys (leaves only) for
    # `localllm keys`, which edits the keys file directly as local administration
    allowed = LEAVES | CLIENT | {"library", "keys", "daemon"}
    assert ours <= allowed, f"cli must not import {ours - allowed}"
    top = {n.split(".")[0] for n in names}
    assert not top & {"llama_cpp", "starlette", "uvicorn"}
    if "daemon" in ours:
        tree = ast.parse(path.read_text())
        top_level = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
        assert "localllm.daemon" not in top_level, "the daemon is imported lazily, inside `serve`"


def test_package_version() -> None:
    assert localllm.__all__ == sorted(localllm.__all__)
    assert localllm.__version__
