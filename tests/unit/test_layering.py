"""Imports only go downward (the layering in README.md): checked by walking every module's imports."""

from __future__ import annotations
import __future__

import ast
import re
import types
from pathlib import Path

import pytest

import localllm

from ..conftest import ROOT

LEAVES = {
    "config",
    "errors",
    "types",
    "names",
    "modelfile",
    "gguf",
    "tools",
    "limits",
    "logs",
    "metrics",
    "templatecaps",
    "thinking",
    "__init__",
}
CORE = {
    "fit_errors",
    "store",
    "hub",
    "prompt",
    "sandbox",
    "renderpool",
    "responses_store",
    "models",
    "templates",
    "generation",
    "memory",
    "scheduler",
    "runner",
    "library",
    "keys",
}
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
    # the modules that load llama.cpp: the engine, its samplers, and ggml's RPC backend (through llama_cpp's libraries)
    if not (in_runner and path.name in {"engine.py", "sampler.py", "rpc.py"}):
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


# The runner boundary's modules (`protocol` re-exports the others): the daemon imports them, so they stay
# below everything else in the runner and never reach the engine or llama.cpp (`split` reads a device split
# from its message).
BOUNDARY = {"protocol", "wire", "loadspec", "requests", "events", "split"}


@pytest.mark.parametrize("name", sorted(BOUNDARY))
def test_the_runner_boundary_imports_only_itself_and_leaves(name: str) -> None:
    path = ROOT / "localllm" / "runner" / f"{name}.py"
    names = {n for n in imported(path, "localllm") if n.startswith("localllm.")}
    runner = {n.split(".")[2] for n in names if n.startswith("localllm.runner.")}
    assert runner <= BOUNDARY, f"runner/{name}.py imports {runner - BOUNDARY} from the runner"
    assert {owner(n) for n in names} <= LEAVES | {"runner"}, f"runner/{name}.py imports more than leaves"


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


# Pairs of modules allowed to import each other for now, each with the change that removes it.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none: every cycle fails


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Every module of `package` and the modules of `package` it imports, anywhere in its body (an import
    inside a function counts too: it still runs, only later)."""
    paths = {module_name(p): p for p in modules(ROOT / package)}

    def module_of(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for me, path in paths.items():
        here = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
        edges: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(module_of(a.name) for a in node.names if a.name.split(".")[0] == package)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                else:
                    target = node.module or ""
                if target.split(".")[0] != package:
                    continue
                for alias in node.names:  # `from . import x` imports the module x, if there is one
                    full = f"{target}.{alias.name}"
                    edges.add(full if full in paths else module_of(target))
        graph[me] = {e for e in edges if e is not None and e != me}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}, "f": {"g"}, "g": {"f"}}
    assert cycles(graph) == [["a", "b", "c"], ["f", "g"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["localllm", "cli"])
def test_no_import_cycles(package: str) -> None:
    graph = import_graph(package)
    assert package in graph and len(graph) > 5, "the walk found the package's modules"
    found = [c for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, f"modules that import each other (directly or around a loop): {found}"


def exported(module: types.ModuleType) -> list[str]:
    """What a package offers (as httpx's test_exported_members): its public names and `__version__`, less its
    submodules and `annotations` (the `from __future__` import)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
        and value is not __future__.annotations
    )


def test_public_api_is_sorted_and_complete() -> None:
    assert localllm.__all__ == exported(localllm), "every public name of localllm is in __all__, sorted, and no more"
    assert re.fullmatch(r"\d+\.\d+\.\d+", localllm.__version__)


def test_a_public_name_left_out_of_all_is_found() -> None:
    package = types.ModuleType("package")
    exec(
        "from __future__ import annotations\nimport json\nfrom json import dumps\n__version__ = '1.0.0'", vars(package)
    )
    assert exported(package) == ["__version__", "dumps"], "json (a module) and annotations are not API; dumps is"


def test_every_test_module_is_in_a_tier() -> None:
    """pytest collects tests/unit and tests/e2e (pyproject's testpaths): a test module elsewhere would never run."""
    tests = ROOT / "tests"
    stray = sorted(
        str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py") if p.parent not in (tests / "unit", tests / "e2e")
    )
    assert not stray, f"move these into tests/unit (no llama.cpp, no process) or tests/e2e: {stray}"
