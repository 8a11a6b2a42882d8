"""bench.py run several times over, every server started afresh each time: the ratios of each run, and their median.

Why: on a shared machine a process's speed drifts by 10-20% over minutes, and differently for each process
(2026-12-08: in one 9-round run, localllm's cold prompt went from 0.97x to 1.2x of llama-server's time as
llama-server's own times fell from 1,846 to 1,623 ms; two 15-round runs back to back gave 0.98x and 1.12x).
The rounds of one run are paired and interleaved, which cancels what changes for both servers at once, but
not what goes with one process for its lifetime. Fresh processes each run do; the median of the runs' ratios
is the figure.

    .venv/bin/python bench/restarts.py --runs 5 -- --model bench-135m --figures repeat --repeat 5
    .venv/bin/python bench/restarts.py --runs 3 -- --model bench-gemma3 --figures single,concurrent --repeat 2

Everything after `--` goes to bench.py (`--only` is set to localllm,llama-server). Each run's own table is
printed as it ends; the summary comes last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).with_name("bench.py")
PEERS = ("localllm", "llama-server")

# (label, value of a server's result, whether lower is better: TTFT; tok/s is higher)
Figure = tuple[str, Callable[[dict[str, Any]], float | None], bool]


def _get(path: Sequence[str]) -> Callable[[dict[str, Any]], float | None]:
    def pick(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, (int, float)) else None

    return pick


def figures(config: dict[str, str]) -> list[Figure]:
    """The figures a run's config measured (bench.py's JSON writes its config's values as strings)."""
    measured = config.get("figures", "")
    out: list[Figure] = []
    if "single" in measured:
        out.append(("decode tok/s, 1 stream", _get(("decode_tps",)), False))
    if "concurrent" in measured:
        for n in config.get("concurrency", "").strip("()").replace(" ", "").split(","):
            if n:
                out.append((f"aggregate tok/s, {n} streams", _get(("concurrent", n, "aggregate_tps")), False))
    if "repeat" in measured:
        out.append(("long prompt TTFT, first time", _get(("repeat", "cold_ttft_ms")), True))
        out.append(("long prompt TTFT, again after other requests", _get(("repeat", "repeat_ttft_ms")), True))
    return out


def ratio(run: dict[str, Any], pick: Callable[[dict[str, Any]], float | None]) -> float | None:
    ours, theirs = (pick(run["results"].get(name, {})) for name in PEERS)
    return ours / theirs if ours is not None and theirs else None


def summary(runs: list[dict[str, Any]]) -> str:
    """One row a figure: localllm / llama-server in each run, and the median of those."""
    head = ["figure (localllm / llama-server)", *(f"run {i + 1}" for i in range(len(runs))), "median"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, pick, lower in figures(runs[0]["config"]):
        ratios = [ratio(run, pick) for run in runs]
        known = [r for r in ratios if r is not None]
        middle = f"**{statistics.median(known):.2f}×**" if known else "–"
        cells = [f"{label} ({'time' if lower else 'tok/s'})", *(f"{r:.2f}×" if r else "–" for r in ratios), middle]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    rest = args[args.index("--") + 1 :] if "--" in args else []
    ours = args[: args.index("--")] if "--" in args else args
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="bench.py runs, each with fresh servers (default 5)")
    a = ap.parse_args(ours)
    if a.runs < 1:
        raise SystemExit("--runs must be at least 1")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-restarts-") as tmp:
        for i in range(a.runs):
            out = Path(tmp) / f"run{i}.json"
            command = [sys.executable, str(BENCH), *rest, "--only", ",".join(PEERS), "--json", str(out)]
            done = subprocess.run(command, stdin=subprocess.DEVNULL, check=False)
            if done.returncode != 0 or not out.exists():
                raise SystemExit(f"run {i + 1}: bench.py failed (exit {done.returncode})")
            runs.append(json.loads(out.read_text()))
    print(f"\n## {a.runs} runs, every server started afresh for each\n")
    print(summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
