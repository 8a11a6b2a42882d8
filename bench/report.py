"""bench.py's report: one Markdown table, a column per server and the ratios localllm / peer, under a header
that says how the run was made."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servers import SERVER_NAMES, Config, ServerResult
from workload import COUNT_METHOD, FILLER_WAVES, REPEAT_ANSWER

ROOT = Path(__file__).resolve().parent.parent
# GGUF file types whose matmuls llama.cpp runs on its AMX kernels when the CPU has AMX (ggml-cpu/amx/common.h)
AMX_FILE_TYPES = {2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K"}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def _round_rates(r: ServerResult, n: int) -> list[float | None]:
    return list(r.concurrent[n]["all_aggregate_tps"])


def report(cfg: Config, results: dict[str, ServerResult], header: list[str], *, interleaved: bool = False) -> str:
    cols = [n for n in SERVER_NAMES if n in results]
    peers = [n for n in ("llama-server", "python") if n in results and "localllm" in results]

    def get(name: str, fn: Callable[[ServerResult], Any]) -> Any:
        r = results[name]
        if r.skipped or r.failed:
            return None
        try:
            return fn(r)
        except (KeyError, TypeError):
            return None

    rows: list[tuple[str, Callable[[ServerResult], Any], Callable[[Any], str], bool]] = []

    def row(
        label: str, fn: Callable[[ServerResult], Any], fmt: Callable[[Any], str] = _fmt, ratio: bool = True
    ) -> None:
        rows.append((label, fn, fmt, ratio))

    def count_fmt(v: Any) -> str:
        return "–" if v is None else str(v)

    if "single" in cfg.figures:
        row(f"decode tok/s, 1 stream ({cfg.tokens} tokens, median of {cfg.repeat})", lambda r: r.decode_tps)
        row("tok/s incl. TTFT, 1 stream", lambda r: r.overall_tps)
        row("TTFT, 1 stream (ms)", lambda r: r.ttft_ms)
        row(
            "tokens / SSE chunks per single stream (count method)",
            lambda r: f"{min(r.single_tokens)} / {min(r.single_chunks)} ({','.join(sorted(set(r.methods)))})",
            count_fmt,
            False,
        )

    def conc(n: int, what: str) -> Callable[[ServerResult], Any]:
        def pick(r: ServerResult) -> Any:
            d = r.concurrent[n]
            if what == "completed":
                return f"{d['completed']}/{d['streams']} ({d['full_length']}/{d['streams']})"
            if what == "ttft":
                return f"{_fmt(d['ttft_p50_ms'], 0)} / {_fmt(d['ttft_max_ms'], 0)}"
            return d[what]

        return pick

    for n in cfg.concurrency if "concurrent" in cfg.figures else ():
        row(f"aggregate tok/s, {n} streams (median of {cfg.repeat} rounds)", conc(n, "aggregate_tps"))
        row(f"completed streams, {n} streams x {cfg.repeat} (full length)", conc(n, "completed"), count_fmt, False)
        row(f"TTFT p50 / max, {n} streams (ms)", conc(n, "ttft"), count_fmt, False)
    if "chat" in cfg.figures:
        row(f"chat turn 1 TTFT, ~{cfg.history_tokens}-token history (ms)", lambda r: r.chat["turn1_ttft_ms"])
        row("chat turn 2 TTFT, history + answer + new message (ms)", lambda r: r.chat["turn2_ttft_ms"])
        row("chat turn 2 / turn 1 TTFT", lambda r: r.chat["ratio"], lambda v: _fmt(v, 3))
    others = FILLER_WAVES * cfg.parallel
    if "repeat" in cfg.figures:
        row(f"long prompt TTFT, first time (~{cfg.long_tokens} tokens, ms)", lambda r: r.repeat["cold_ttft_ms"])
        row(f"long prompt TTFT, again after {others} other requests (ms)", lambda r: r.repeat["repeat_ttft_ms"])
    row("daemon idle RSS, no model loaded (MB)", lambda r: r.rss_idle)
    row(
        "RSS with the model loaded, all processes (MB)",
        lambda r: (r.rss_loaded["main"] + r.rss_loaded["children"]) if r.rss_loaded else None,
    )
    row("daemon RSS after unloading (MB)", lambda r: r.rss_after_unload)

    titles = {"localllm": "localllm", "llama-server": "llama-server", "python": "llama_cpp.server"}
    head = ["figure", *(titles[c] for c in cols), *(f"localllm / {titles[p]}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, fn, fmt, ratio in rows:
        values = [get(c, fn) for c in cols]
        cells = [label, *(fmt(v) for v in values)]
        for p in peers:
            a, b = get("localllm", fn), get(p, fn)
            cells.append(_ratio(a, b) if ratio and isinstance(a, (int, float)) else "")
        lines.append("| " + " | ".join(cells) + " |")
    if interleaved:  # each repeat ran on every server back to back: compare them repeat by repeat
        paired: list[tuple[str, Callable[[ServerResult], list[float | None]]]] = []
        if "single" in cfg.figures:
            paired.append(("decode tok/s, 1 stream", lambda r: r.single_rates))
        for n in cfg.concurrency if "concurrent" in cfg.figures else ():
            paired.append((f"aggregate tok/s, {n} streams", functools.partial(_round_rates, n=n)))
        if "repeat" in cfg.figures:
            paired.append(
                (f"long prompt TTFT again after {others} other requests", lambda r: r.repeat["all_repeat_ms"])
            )
        for label, pick in paired:
            cells = [f"{label}: median of the {cfg.repeat} paired ratios", *("" for _ in cols)]
            for p in peers:
                a, b = get("localllm", pick) or [], get(p, pick) or []
                ratios = [x / y for x, y in zip(a, b, strict=False) if x and y]
                cells.append(f"**{statistics.median(ratios):.2f}×**" if ratios else "–")
            lines.append("| " + " | ".join(cells) + " |")

    out = [*header, "", *lines, ""]
    for c in cols:
        r = results[c]
        if r.skipped:
            out.append(f"- {titles[c]}: skipped ({r.skipped})")
        if r.failed:
            out.append(f"- {titles[c]}: FAILED ({r.failed.splitlines()[0]})")
        if r.rss_loaded and c == "localllm":
            out.append(
                f"- localllm RSS loaded: daemon {r.rss_loaded['main']:.1f} MB"
                f" + runner {r.rss_loaded['children']:.1f} MB"
            )
        for n, d in r.concurrent.items():
            if d["errors"]:
                out.append(f"- {titles[c]} @{n} errors: {'; '.join(d['errors'])}")
        for note in dict.fromkeys(r.notes):
            out.append(f"- {titles[c]}: {note}")
    sizes = {
        c: (results[c].chat["turn1_prompt_tokens"], results[c].chat["turn2_prompt_tokens"])
        for c in cols
        if results[c].chat
    }
    repeats = {c: results[c].repeat["prompt_tokens"] for c in cols if results[c].repeat}
    if repeats:
        out.append(f"- long prompt tokens (counted locally), each round: {next(iter(repeats.values()))}")
    if sizes:
        same = len({str(v) for v in sizes.values()}) == 1
        for c, (t1, t2) in sizes.items():
            who = "every server" if same else titles[c]
            out.append(f"- chat prompt tokens (counted locally), {who}: turn 1 {t1}, turn 2 {t2}")
            if same:
                break
    return "\n".join(out)


def amx_warning(model: Path) -> str | None:
    """On a CPU with AMX, llama.cpp 0.3.36's AMX kernels can crash (SIGSEGV) on these quant types."""
    try:
        with open("/proc/cpuinfo") as f:
            if "amx_int8" not in f.read():
                return None
        from gguf import GGUFReader

        file_type = int(GGUFReader(str(model)).fields["general.file_type"].contents())
    except Exception:  # no cpuinfo, no gguf package, no file type: say nothing
        return None
    if file_type not in AMX_FILE_TYPES:
        return None
    return (
        f"this CPU has AMX and the model is {AMX_FILE_TYPES[file_type]}: llama.cpp runs it on its AMX kernels, "
        "which crashed with SIGSEGV on this project's 2-core test machine (all three servers); "
        "bench-135m-f16 avoids them"
    )


def describe(cfg: Config, load_before: float, *, interleaved: bool = False) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--oneline", "-1"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    try:
        import llama_cpp

        lcp = llama_cpp.__version__
    except ImportError:
        lcp = "?"
    size = cfg.model.stat().st_size / 1e6
    server_version = "not built"
    if os.access(cfg.llama_server, os.X_OK):
        probe = subprocess.run([str(cfg.llama_server), "--version"], capture_output=True, text=True, timeout=30)
        lines = (probe.stdout + probe.stderr).strip().splitlines()
        server_version = next((x for x in lines if x.startswith("version")), "?")
    warning = amx_warning(cfg.model)
    return [
        f"## localllm benchmark: {cfg.model.name} ({size:.1f} MB), {cfg.threads} threads",
        *(["", f"**Warning**: {warning}"] if warning else []),
        "",
        f"- localllm commit: {commit or '?'}{' + uncommitted changes' if dirty else ''}; "
        f"llama-cpp-python {lcp}; llama-server {server_version}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- host: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"1-min load average before the run {load_before:.2f} (other work on the CPUs skews every figure)",
        f"- every server: context {cfg.ctx} tokens per sequence, {cfg.threads} threads (prompt and decode); "
        f"localllm and llama-server with {cfg.parallel} sequence slots (llama-server -c {cfg.ctx * cfg.parallel} "
        f"-np {cfg.parallel}), llama_cpp.server with its one sequence",
        f"- requests: streaming POST /v1/completions, temperature 0, max_tokens {cfg.tokens}; "
        f"tokens counted as {COUNT_METHOD}",
        "- servers were "
        + (
            "all running, taking turns at every repeat of every figure (the order reversed every other repeat)"
            if interleaved
            else "measured one after the other (--sequential)"
        ),
        *(
            [
                f"- long prompt: a ~{cfg.long_tokens}-token transcript unique to each round, answered with "
                f"{REPEAT_ANSWER} tokens, then {FILLER_WAVES} waves of {cfg.parallel} short distinct requests at once "
                "(each wave takes every slot), then the same long prompt again"
            ]
            if "repeat" in cfg.figures
            else []
        ),
        f"- figures: {', '.join(cfg.figures)}",
        "- ratios are localllm / peer: above 1 is better for tok/s, worse for TTFT and RSS",
    ]
