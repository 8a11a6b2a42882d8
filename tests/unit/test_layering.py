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

# The layers, one entry per top-level package or module of localllm (README.md, "Layout"): a package may import
# its own modules and anything on a lower level, never a neighbour on its own level or anything above it. A new
# module inside a package is placed by where it lives; a new top-level entry fails until it is given a level.
LEVEL = {
    "__init__": 0,  # the version
    "domain": 0,  # errors, names, bounds, typed options and events: the standard library only
    "config": 1,
    "observability": 1,  # logs, metrics, what the machine has
    "chat": 1,  # templates, their capabilities, reasoning and tool calls
    "auth": 1,  # keys, tokens, quotas
    "modelstore": 2,  # store, Hub, GGUF, Modelfiles, library
    "runner": 2,  # the model process (llama.cpp)
    "scheduling": 3,  # which runners are loaded
    "service": 4,  # the use cases
    "server": 5,  # HTTP
    "daemon": 6,  # runs the server
}
CLIENT = {"client"}  # the CLI's HTTP client: it may use only the lowest levels
CLIENT_MAY_USE = {"__init__", "domain", "config", "client"}


def entries() -> set[str]:
    """Every top-level package and module of localllm, as the layering names them."""
    pkg = ROOT / "localllm"
    out = {p.stem for p in pkg.glob("*.py")}
    out.update(p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    return out


def test_every_top_level_package_and_module_has_a_layer() -> None:
    assert entries() == set(LEVEL) | CLIENT, "give each new top-level package a level in LEVEL (and README's layout)"


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
            if node.level == 0:  # `from localllm.auth import quota` imports the module localllm.auth.quota
                mod = node.module or ""
                subs = {f"{mod}.{a.name}" for a in node.names if is_module(f"{mod}.{a.name}")}
                out.update(subs or {mod})
            else:
                base = list(rel[: len(rel) - node.level])
                parts = [package, *base, *(node.module.split(".") if node.module else [])]
                if node.module is None:
                    out.update(".".join([*parts, alias.name]) for alias in node.names)
                else:
                    out.add(".".join(parts))
    return out


def is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return dotted.startswith("localllm.") and (path.with_suffix(".py").exists() or path.is_dir())


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
    # the modules that load llama.cpp: the engine, its samplers, its multimodal projector (mtmd), and ggml's RPC
    # backend (through llama_cpp's libraries)
    if not (in_runner and path.name in {"engine.py", "sampler.py", "multimodal.py", "rpc.py"}):
        assert not any(n.split(".")[0] == "llama_cpp" for n in names), "llama_cpp belongs to runner/engine.py"
    if me != "server":
        assert not any(n.split(".")[0] == "starlette" for n in names), "starlette belongs under server/"
    if me != "daemon":
        assert "uvicorn" not in {n.split(".")[0] for n in names}, "uvicorn belongs to daemon.py"
    assert "click" not in {n.split(".")[0] for n in names}, "click belongs to cli/"
    ours = {owner(n) for n in names if n.startswith("localllm.") or n == "localllm"}
    if me in CLIENT:
        assert ours <= CLIENT_MAY_USE, f"the client may use only {sorted(CLIENT_MAY_USE)}, not {ours - CLIENT_MAY_USE}"
        return
    for other in ours - {me, "__init__"}:
        assert other in LEVEL, f"{me} imports {other}, which has no layer"
        assert LEVEL[other] < LEVEL[me], f"{me} (level {LEVEL[me]}) must not import {other} (level {LEVEL[other]})"


# The daemon's side of the runner boundary: every runner module the rest of localllm reaches, directly or
# through other modules (the typed protocol the daemon speaks, the handle on a runner process), is found by
# walking the imports, never listed; none of them may reach a module that imports llama_cpp.
def imports_llama_cpp(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return any(n.split(".")[0] == "llama_cpp" for n in imported(path, "localllm"))


def reached(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_daemon_side_never_reaches_llama_cpp() -> None:
    graph = import_graph("localllm")
    daemon_side = reached(graph, {m for m in graph if not m.startswith("localllm.runner")})
    boundary = {m for m in daemon_side if m.startswith("localllm.runner")}
    assert "localllm.runner.protocol" in boundary, "the walk found the runner boundary the service speaks"
    loaders = sorted(m for m in boundary if imports_llama_cpp(m))
    assert not loaders, f"the daemon reaches llama_cpp through {loaders}"


# What the CLI may use besides the client and the leaves: a policy, not a layer (a module left out is refused,
# so a new one cannot slip in by being forgotten). Each runs on the user's side of the HTTP line and reaches
# nothing of the daemon's: the library of Modelfiles shipped with the CLI (`list --library`), the Modelfile
# parser (`create`, `/set parameter`), and the keys file that `localllm keys` edits as local administration.
CLI_LOCAL = {"localllm.modelstore.library", "localllm.modelstore.modelfile", "localllm.auth.keysfile"}


@pytest.mark.parametrize("path", modules(ROOT / "cli"), ids=lambda p: str(p.relative_to(ROOT)))
def test_cli_uses_only_the_client_and_leaves(path: Path) -> None:
    names = imported(path, "cli")
    ours = {n for n in names if n.startswith("localllm.") and owner(n) not in CLIENT_MAY_USE | {"daemon"}}
    assert ours <= CLI_LOCAL, f"cli must not import {ours - CLI_LOCAL}: it talks to the daemon over HTTP"
    top = {n.split(".")[0] for n in names}
    assert not top & {"llama_cpp", "starlette", "uvicorn"}
    if any(owner(n) == "daemon" for n in names):  # only `serve` runs the daemon, imported inside the command
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
    """pytest collects tests/unit, tests/e2e and tests/agents (pyproject's testpaths): a test module elsewhere would
    never run."""
    tests = ROOT / "tests"
    tiers = (tests / "unit", tests / "e2e", tests / "agents")
    stray = sorted(str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py") if p.parent not in tiers)
    assert not stray, f"move these into tests/unit (no llama.cpp, no process), tests/e2e or tests/agents: {stray}"
