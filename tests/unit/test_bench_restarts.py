"""bench/restarts.py's summary over runs written as bench.py writes them (its `--json`: the config's values as
strings, each server's `ServerResult` as a dict), so the two cannot drift apart unnoticed."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

from ..conftest import ROOT


def _module(name: str) -> ModuleType:
    """bench/NAME.py (bench/ is scripts, not a package), as the module `bench_NAME`."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


restarts = _module("restarts")
servers = _module("servers")


def run(cold: tuple[float, float], tps: tuple[float, float]) -> dict[str, Any]:
    """One bench.py run's JSON, built from its own types."""
    results = {}
    for name, c, t in zip(("localllm", "llama-server"), cold, tps, strict=True):
        result = servers.ServerResult(name, decode_tps=t)
        result.repeat = {"cold_ttft_ms": c, "repeat_ttft_ms": c / 10}
        result.concurrent = {4: {"aggregate_tps": t * 2}}
        results[name] = dataclasses.asdict(result)
    config = {"figures": str(("single", "concurrent", "repeat")), "concurrency": str((4,))}
    written: dict[str, Any] = json.loads(json.dumps({"config": config, "results": results}))
    return written


def test_each_runs_ratio_and_their_median() -> None:
    runs = [run((2000, 1000), (90, 100)), run((1100, 1000), (100, 100)), run((900, 1000), (110, 100))]
    table = restarts.summary(runs).splitlines()
    assert table[0] == "| figure (localllm / llama-server) | run 1 | run 2 | run 3 | median |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert rows["decode tok/s, 1 stream (tok/s)"].endswith("| 0.90× | 1.00× | 1.10× | **1.00×** |")
    assert rows["aggregate tok/s, 4 streams (tok/s)"].endswith("| 0.90× | 1.00× | 1.10× | **1.00×** |")
    assert rows["long prompt TTFT, first time (time)"].endswith("| 2.00× | 1.10× | 0.90× | **1.10×** |")
    assert "long prompt TTFT, again after other requests (time)" in rows


def test_a_figure_a_server_lacks_is_a_dash() -> None:
    lacking = run((2000, 1000), (90, 100))
    lacking["results"]["llama-server"]["repeat"] = {}
    row = [line for line in restarts.summary([lacking]).splitlines() if "first time" in line][0]
    assert row.endswith("| – | – |")
