#!/usr/bin/env python3
"""Benchmark localllm against llama.cpp's `llama-server` and `python -m llama_cpp.server` on one model.

Each server is started in turn on a free 127.0.0.1 port with the same model, the same thread count and the
same per-sequence context, warmed up with one short request, then driven with the same streaming
`POST /v1/completions` requests (prompt string, temperature 0, stream true), and stopped. The figures are
printed as one Markdown table with a column per server and the ratios localllm / peer.

    .venv/bin/python bench/bench.py --model stories --threads 2
    .venv/bin/python bench/bench.py --model bench-135m --threads 2 --only localllm,llama-server
    .venv/bin/python bench/bench.py --model stories --figures repeat --only localllm,llama-server

See bench/README.md for how to build the peers and what each figure means. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from report import describe, report
from servers import (
    HERE,
    SERVER_NAMES,
    SERVERS,
    WORK,
    Config,
    LocalLLM,
    Server,
    ServerResult,
    Stream,
    rss_mb,
    stream_completion,
)
from workload import (
    CHAT_QUESTION_1,
    CHAT_QUESTION_2,
    CHAT_TURNS,
    CONCURRENT_PROMPTS,
    FIGURES,
    FILLER_WAVES,
    REPEAT_ANSWER,
    SINGLE_PROMPTS,
)

ROOT = HERE.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"
MODELS = {
    "stories": SHARED_MODELS / "stories260K.gguf",
    "bench-135m": HERE / "models" / "bench-135m.gguf",  # make_model.py --preset bench-135m (Q8_0)
    "bench-135m-f16": HERE / "models" / "bench-135m-f16.gguf",  # the same with --type f16
    # the other shapes (make_shapes.py, F16): sliding-window, hybrid, recurrent
    "bench-gemma3": HERE / "models" / "bench-gemma3.gguf",  # Gemma 3 270M's shape, window 512
    "bench-lfm2": HERE / "models" / "bench-lfm2.gguf",  # LFM2-350M's shape
    "bench-mamba": HERE / "models" / "bench-mamba.gguf",  # mamba-130m's shape
}
MAKE_MODEL = {  # how to write each (run from the project root)
    "bench-135m": "../shared/tools/make_model.py {path} --preset bench-135m",
    "bench-135m-f16": "../shared/tools/make_model.py {path} --preset bench-135m --type f16",
    "bench-gemma3": "bench/make_shapes.py {path} --arch gemma3",
    "bench-lfm2": "bench/make_shapes.py {path} --arch lfm2",
    "bench-mamba": "bench/make_shapes.py {path} --arch mamba",
}
DEFAULT_LLAMA_SERVER = HERE / ".build" / "llama-server"
DEFAULT_PEER_PYTHON = HERE / ".venv-peer" / "bin" / "python"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class Tokenizer:
    """Counts the model's tokens locally (llama.cpp vocab only), to size the chat history the same for all."""

    def __init__(self, model: Path) -> None:
        self._llama: Any = None
        saved = os.dup(2)  # llama.cpp logs to fd 2 even with verbose=False
        try:
            import llama_cpp

            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
                self._llama = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
        except Exception as exc:  # anything: fall back to an estimate
            os.dup2(saved, 2)
            print(f"note: counting tokens as chars/4 ({exc})", file=sys.stderr)
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def count(self, text: str) -> int:
        if self._llama is None:
            return len(text) // 4
        return len(self._llama.tokenize(text.encode(), add_bos=True, special=False))


def chat_history(tok: Tokenizer, n_tokens: int, label: int, *, opening: str = "Conversation") -> str:
    """A User/Assistant transcript of about `n_tokens` tokens (whole sentences), opened by a line unique to
    `opening` and `label` so that no server can already hold it in a cache."""
    text = f"{opening} {label}.\n"
    i = 0
    while True:
        question, answer = CHAT_TURNS[i % len(CHAT_TURNS)]
        text += f"User: {question}\nAssistant:"
        for sentence in answer.split(". "):
            text += " " + sentence.rstrip(".") + "."
            if tok.count(text) >= n_tokens:
                return text + "\n"
        text += "\n"
        i += 1


class Measure:
    """One server's measurements, a phase at a time, so that servers can take turns (`--interleave`)."""

    def __init__(self, server: Server, cfg: Config, tok: Tokenizer, result: ServerResult) -> None:
        self.server, self.cfg, self.tok, self.result = server, cfg, tok, result
        self.singles: list[Stream] = []
        concurrency = cfg.concurrency if "concurrent" in cfg.figures else ()
        self.rounds: dict[int, list[tuple[float, list[Stream]]]] = {n: [] for n in concurrency}
        self.chats: list[tuple[Stream, Stream, int, int]] = []
        self.repeats: list[tuple[Stream, Stream, int]] = []

    def run(self, client: httpx.AsyncClient, prompt: str, n: int) -> Any:
        return stream_completion(client, self.server, prompt, n, timeout=self.cfg.request_timeout)

    async def setup(self, client: httpx.AsyncClient) -> None:
        server = self.server
        await server.wait_ready(client)
        if isinstance(server, LocalLLM):
            await asyncio.sleep(1.0)
            self.result.rss_idle = rss_mb(server.proc.pid) if server.proc else None
        warm = await self.run(client, "Hello there. Once", 8)
        if not warm.complete:
            raise RuntimeError(f"warm-up request failed: {warm.error or warm.finish}\n{server.log_tail()}")

    async def single(self, client: httpx.AsyncClient, i: int) -> None:
        self.singles.append(await self.run(client, SINGLE_PROMPTS[i % len(SINGLE_PROMPTS)], self.cfg.tokens))

    async def concurrent(self, client: httpx.AsyncClient, n: int, rep: int) -> None:
        """One round of n streams with n different prompts."""
        prompts = [CONCURRENT_PROMPTS[(i + rep) % len(CONCURRENT_PROMPTS)] for i in range(n)]
        t0 = time.perf_counter()
        batch = await asyncio.gather(*(self.run(client, p, self.cfg.tokens) for p in prompts))
        self.rounds[n].append((max(s.t_end for s in batch) - t0, list(batch)))

    async def chat(self, client: httpx.AsyncClient, k: int) -> None:
        """A fresh conversation with a long history, then its second turn."""
        history = chat_history(self.tok, self.cfg.history_tokens, k + 1)
        prompt1 = history + f"User: {CHAT_QUESTION_1}\nAssistant:"
        t1 = await self.run(client, prompt1, self.cfg.answer_tokens)
        prompt2 = prompt1 + t1.text + f"\nUser: {CHAT_QUESTION_2}\nAssistant:"
        t2 = await self.run(client, prompt2, 16)
        self.chats.append((t1, t2, self.tok.count(prompt1), self.tok.count(prompt2)))

    async def repeat_prompt(self, client: httpx.AsyncClient, k: int) -> None:
        """A long prompt, then `FILLER_WAVES` waves of `--parallel` short distinct requests sent at once (each
        wave takes every slot, so the long prompt's slot is reused), then the same long prompt again."""
        prompt = chat_history(self.tok, self.cfg.long_tokens, k + 1, opening="Transcript")
        cold = await self.run(client, prompt, REPEAT_ANSWER)
        for wave in range(FILLER_WAVES):
            openers = [
                f"Story {k}.{wave}.{i}: {CONCURRENT_PROMPTS[i % len(CONCURRENT_PROMPTS)]}"
                for i in range(self.cfg.parallel)
            ]
            await asyncio.gather(*(self.run(client, p, REPEAT_ANSWER) for p in openers))
        again = await self.run(client, prompt, REPEAT_ANSWER)
        self.repeats.append((cold, again, self.tok.count(prompt)))

    async def finish(self, client: httpx.AsyncClient) -> None:
        """Sum up into the result; read RSS; let the server unload (localllm)."""
        result = self.result
        for s in self.singles:
            if not s.complete:
                result.notes.append(f"single stream incomplete: {s.error or s.finish}")
        result.single_rates = [s.decode_rate for s in self.singles]
        result.decode_tps = _median(result.single_rates)
        result.ttft_ms = _median([s.ttft * 1000 if s.ttft is not None else None for s in self.singles])
        result.overall_tps = _median([s.overall_rate for s in self.singles])
        result.single_tokens = [s.tokens for s in self.singles]
        result.single_chunks = [s.chunks for s in self.singles]
        result.methods.extend(s.method for s in self.singles)
        for n, rounds in self.rounds.items():
            streams = [s for _, batch in rounds for s in batch]
            rates = [sum(s.tokens for s in batch) / wall if wall > 0 else None for wall, batch in rounds]
            ttfts = [s.ttft * 1000 for s in streams if s.ttft is not None]
            result.methods.extend(s.method for s in streams)
            result.concurrent[n] = {
                "aggregate_tps": _median(rates),
                "all_aggregate_tps": rates,
                "completed": sum(s.complete for s in streams),
                "full_length": sum(s.complete and s.tokens >= self.cfg.tokens for s in streams),
                "streams": len(streams),
                "tokens": [s.tokens for s in streams],
                "chunks": [s.chunks for s in streams],
                "finish": [s.finish for s in streams],
                "wall_s": [wall for wall, _ in rounds],
                "ttft_p50_ms": statistics.median(ttfts) if ttfts else None,
                "ttft_max_ms": max(ttfts) if ttfts else None,
                "errors": sorted({s.error for s in streams if s.error})[:3],
            }
        firsts, seconds = [], []
        for t1, t2, _, _ in self.chats:
            for label, s in (("turn 1", t1), ("turn 2", t2)):
                if not s.complete:
                    result.notes.append(f"chat {label} incomplete: {s.error or s.finish}")
            firsts.append(t1.ttft * 1000 if t1.ttft is not None else None)
            seconds.append(t2.ttft * 1000 if t2.ttft is not None else None)
        ratios = [b / a for a, b in zip(firsts, seconds, strict=True) if a and b]
        if self.chats:
            result.chat = {
                "turn1_ttft_ms": _median(firsts),
                "turn2_ttft_ms": _median(seconds),
                "ratio": _median(ratios),
                "turn1_prompt_tokens": [c[2] for c in self.chats],
                "turn2_prompt_tokens": [c[3] for c in self.chats],
                "all_turn1_ms": firsts,
                "all_turn2_ms": seconds,
            }
        colds, agains = [], []
        for cold, again, _ in self.repeats:
            for label, s in (("first", cold), ("repeated", again)):
                if not s.complete:
                    result.notes.append(f"long prompt ({label}) incomplete: {s.error or s.finish}")
            colds.append(cold.ttft * 1000 if cold.ttft is not None else None)
            agains.append(again.ttft * 1000 if again.ttft is not None else None)
        if self.repeats:
            result.repeat = {
                "cold_ttft_ms": _median(colds),
                "repeat_ttft_ms": _median(agains),
                "all_cold_ms": colds,
                "all_repeat_ms": agains,
                "prompt_tokens": [r[2] for r in self.repeats],
            }
        result.rss_loaded = self.server.rss()
        await self.server.after_measurements(client, result)


def _client(cfg: Config) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=httpx.Timeout(cfg.request_timeout, connect=10), limits=limits, trust_env=False)


async def measure(server: Server, cfg: Config, tok: Tokenizer, result: ServerResult) -> None:
    """Every measurement of one server, one after the other."""
    async with _client(cfg) as client:
        m = Measure(server, cfg, tok, result)
        await m.setup(client)
        for i in range(cfg.repeat if "single" in cfg.figures else 0):
            await m.single(client, i)
        for n in cfg.concurrency if "concurrent" in cfg.figures else ():
            for rep in range(cfg.repeat):
                await m.concurrent(client, n, rep)
        for k in range(cfg.repeat if "chat" in cfg.figures else 0):
            await m.chat(client, k)
        for k in range(cfg.repeat if "repeat" in cfg.figures else 0):
            await m.repeat_prompt(client, k)
        await m.finish(client)


async def measure_interleaved(pairs: list[tuple[Server, ServerResult]], cfg: Config, tok: Tokenizer) -> None:
    """The same measurements with every server running: each repeat of each figure goes to every server in
    turn, the order reversed every other repeat, so a machine whose speed drifts affects all servers alike.
    A server that fails is reported and leaves the rotation."""
    async with _client(cfg) as client:
        live = [Measure(server, cfg, tok, result) for server, result in pairs]

        async def each(rep: int, phase: str, *args: int) -> None:
            for m in list(live if rep % 2 == 0 else reversed(live)):
                try:
                    await getattr(m, phase)(client, *args)
                except Exception as exc:  # report it and go on with the others
                    m.result.failed = f"{type(exc).__name__}: {exc}"
                    print(f"[{m.server.name}] failed: {m.result.failed}", file=sys.stderr)
                    live.remove(m)

        await each(0, "setup")
        for i in range(cfg.repeat if "single" in cfg.figures else 0):
            await each(i, "single", i)
        for n in cfg.concurrency if "concurrent" in cfg.figures else ():
            for rep in range(cfg.repeat):
                await each(rep, "concurrent", n, rep)
        for k in range(cfg.repeat if "chat" in cfg.figures else 0):
            await each(k, "chat", k)
        for k in range(cfg.repeat if "repeat" in cfg.figures else 0):
            await each(k, "repeat_prompt", k)
        await each(0, "finish")


def run_server(name: str, cfg: Config, tok: Tokenizer) -> ServerResult:
    server = SERVERS[name](cfg)
    result = ServerResult(name)
    t0 = time.monotonic()
    if not _start(server, result):
        return result
    try:
        asyncio.run(measure(server, cfg, tok, result))
    except Exception as exc:  # report it and go on with the next server
        result.failed = f"{type(exc).__name__}: {exc}"
        print(f"[{name}] failed: {result.failed}", file=sys.stderr)
    finally:
        server.stop()
    result.notes.extend(server.notes)
    print(f"[{name}] done in {time.monotonic() - t0:.0f}s (log: {server.log_path})", file=sys.stderr)
    return result


def _start(server: Server, result: ServerResult) -> bool:
    """Start `server`; False (with the reason in `result`) when it is missing or does not start."""
    reason = server.missing()
    if reason:
        result.skipped = reason
        print(f"[{server.name}] skipped: {reason}", file=sys.stderr)
        return False
    try:
        server.start()
    except Exception as exc:  # report it and go on with the next server
        server.stop()
        result.failed = f"{type(exc).__name__}: {exc}"
        print(f"[{server.name}] failed to start: {result.failed}", file=sys.stderr)
        return False
    shown = ["localllm", "serve"] if server.name == "localllm" else server.command()
    print(f"[{server.name}] started: {' '.join(shown)}", file=sys.stderr)
    return True


def run_interleaved(names: list[str], cfg: Config, tok: Tokenizer) -> dict[str, ServerResult]:
    """Start every server, measure them taking turns (`measure_interleaved`), stop them all."""
    results = {name: ServerResult(name) for name in names}
    pairs: list[tuple[Server, ServerResult]] = []
    t0 = time.monotonic()
    try:
        for name in names:
            server = SERVERS[name](cfg)
            if _start(server, results[name]):
                pairs.append((server, results[name]))
        asyncio.run(measure_interleaved(pairs, cfg, tok))
    finally:
        for server, result in pairs:
            server.stop()
            result.notes.extend(server.notes)
    print(f"[interleaved] done in {time.monotonic() - t0:.0f}s (logs: {cfg.logs})", file=sys.stderr)
    return results


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="stories", help=f"{', '.join(MODELS)} or a GGUF path (default: stories)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every server (default 2)")
    ap.add_argument("--tokens", type=int, default=256, help="max_tokens of each measured stream (default 256)")
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence (default 2048)")
    ap.add_argument("--parallel", type=int, default=4, help="sequence slots of localllm and llama-server (4)")
    ap.add_argument("--concurrency", default="4,8", help="concurrent stream counts (default 4,8)")
    ap.add_argument("--repeat", type=int, default=3, help="single-stream runs and chat conversations (3)")
    ap.add_argument("--history-tokens", type=int, default=1000, help="chat history size in tokens (1000)")
    ap.add_argument("--answer-tokens", type=int, default=64, help="max_tokens of the chat's first answer (64)")
    ap.add_argument("--long-tokens", type=int, default=1000, help="the repeated long prompt's tokens (1000)")
    ap.add_argument(
        "--figures",
        default=",".join(FIGURES),
        help=f"figures to measure, comma-separated (default: all of {','.join(FIGURES)}; e.g. repeat alone)",
    )
    ap.add_argument("--only", default=",".join(SERVER_NAMES), help="servers to run, comma-separated")
    ap.add_argument("--skip-missing", action="store_true", help="skip a peer that is not built/installed")
    ap.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER, help="llama-server binary")
    ap.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON, help="python with llama_cpp.server")
    ap.add_argument("--start-timeout", type=float, default=180, help="seconds a server may take to be ready")
    ap.add_argument("--request-timeout", type=float, default=600, help="seconds one request may take")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="measure one server after the other (default: all running, taking turns at every repeat)",
    )
    a = ap.parse_args(argv)

    model = MODELS.get(a.model, Path(a.model)).resolve()
    if not model.is_file():
        hint = ""
        if a.model in MAKE_MODEL:
            hint = f" (.venv/bin/python {MAKE_MODEL[a.model].format(path=model)})"
        raise SystemExit(f"model not found: {model}{hint}")
    only = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in SERVERS]
    if unknown:
        raise SystemExit(f"--only: unknown server(s) {unknown}; choose from {list(SERVERS)}")
    for name, value in (("--threads", a.threads), ("--tokens", a.tokens), ("--repeat", a.repeat)):
        if value < 1:
            raise SystemExit(f"{name} must be at least 1")
    figures = tuple(f for f in FIGURES if f in {x.strip() for x in a.figures.split(",")})
    if not figures or set(x.strip() for x in a.figures.split(",") if x.strip()) - set(FIGURES):
        raise SystemExit(f"--figures: choose from {','.join(FIGURES)}")
    cfg = Config(
        model=model,
        threads=a.threads,
        ctx=a.ctx,
        parallel=a.parallel,
        tokens=a.tokens,
        repeat=a.repeat,
        concurrency=tuple(int(x) for x in a.concurrency.split(",") if x.strip()),
        history_tokens=a.history_tokens,
        answer_tokens=a.answer_tokens,
        long_tokens=a.long_tokens,
        figures=figures,
        start_timeout=a.start_timeout,
        request_timeout=a.request_timeout,
        llama_server=a.llama_server.resolve(),
        peer_python=a.peer_python.absolute(),  # a venv's python is a symlink: keep the venv's path
        logs=WORK / "logs",
    )
    if "chat" in figures and cfg.history_tokens + cfg.answer_tokens + 64 > cfg.ctx:
        raise SystemExit("--ctx is too small for --history-tokens + --answer-tokens")
    if "repeat" in figures and cfg.long_tokens + 64 > cfg.ctx:
        raise SystemExit("--ctx is too small for --long-tokens (e.g. --long-tokens 4000 --ctx 4352)")

    if not a.skip_missing:
        for name in only:
            reason = SERVERS[name](cfg).missing()
            if reason:
                raise SystemExit(f"{name}: {reason} (or pass --skip-missing)")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    load_before = os.getloadavg()[0]
    tok = Tokenizer(model)
    names = [n for n in SERVER_NAMES if n in only]
    if a.sequential:
        results = {name: run_server(name, cfg, tok) for name in names}
    else:
        results = run_interleaved(names, cfg, tok)
    header = describe(cfg, load_before, interleaved=not a.sequential)
    text = report(cfg, results, header, interleaved=not a.sequential)
    print(text)
    if a.json:
        a.json.write_text(json.dumps({"config": {k: str(v) for k, v in asdict(cfg).items()},
                                      "results": {k: asdict(v) for k, v in results.items()}}, indent=2))  # fmt: skip
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
