#!/usr/bin/env python3
"""The prompt cache's disk tier after a daemon restart, against a hit in its RAM tier, on one model.

Each round: a daemon with `LOCALLLM_CACHE_DIR` answers a long prompt (a transcript unique to the round) and
stops (its slots' states are written on the way out); a new daemon on the same cache directory loads the model
(and a short prompt warms it up, so neither is in the figure) and answers the same prompt: the **disk hit**. Then two
waves of `--parallel` short requests take every slot and the prompt comes again: a **RAM hit**. Times to first
token of a streamed `/v1/completions`, and `cached_tokens` to show where the prompt came from.

    .venv/bin/python bench/disk_restart.py --model stories --rounds 5
    .venv/bin/python bench/disk_restart.py --model bench/models/bench-135m-f16.gguf --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
from servers import WORK, Config, LocalLLM, stream_completion
from workload import CONCURRENT_PROMPTS, FILLER_WAVES, REPEAT_ANSWER

from bench import MODELS, Tokenizer, chat_history


class CachedLocalLLM(LocalLLM):
    """localllm with a disk tier, whose store and cache outlive a stop (one of each for the whole run)."""

    def __init__(self, cfg: Config, cache_dir: Path) -> None:
        super().__init__(cfg)
        self.cache_dir = cache_dir

    def prepare(self) -> None:
        if self.store_dir is None:
            super().prepare()

    def cleanup(self) -> None:
        pass

    def env(self) -> dict[str, str]:
        env = super().env()
        env["LOCALLLM_CACHE_DIR"] = str(self.cache_dir)
        env["LOCALLLM_DEBUG"] = "1"  # the runner's "prompt cache: disk hit" lines, counted at the end
        return env


async def first_then_cached(client: httpx.AsyncClient, server: LocalLLM, prompt: str, cfg: Config) -> dict[str, Any]:
    """The disk hit (the first request of this daemon), then the RAM hit after every slot was taken."""
    body = {"model": server.model_field, "prompt": prompt, "max_tokens": REPEAT_ANSWER, "temperature": 0}
    stream = await stream_completion(client, server, prompt, REPEAT_ANSWER, timeout=cfg.request_timeout)
    assert stream.ttft is not None, stream.error
    disk = stream.ttft * 1000
    for wave in range(FILLER_WAVES):
        openers = [f"Story {wave}.{i}: {CONCURRENT_PROMPTS[i % len(CONCURRENT_PROMPTS)]}" for i in range(cfg.parallel)]
        await asyncio.gather(*(stream_completion(client, server, p, REPEAT_ANSWER, timeout=60) for p in openers))
    again = await stream_completion(client, server, prompt, REPEAT_ANSWER, timeout=cfg.request_timeout)
    assert again.ttft is not None, again.error
    # where each came from, without timing it: the same prompt once more, whole (a slot hit now)
    usage = (await client.post(server.base_url + "/v1/completions", json=body, timeout=60)).json()["usage"]
    return {"disk_ms": disk, "ram_ms": again.ttft * 1000, "prompt_tokens": usage["prompt_tokens"]}


async def one_round(cfg: Config, cache_dir: Path, tok: Tokenizer, k: int, server: CachedLocalLLM) -> dict[str, Any]:
    prompt = chat_history(tok, cfg.long_tokens, 1000 + k, opening="Transcript")
    async with httpx.AsyncClient(trust_env=False, timeout=cfg.request_timeout) as client:
        server.start()
        await server.wait_ready(client)
        await stream_completion(client, server, prompt, REPEAT_ANSWER, timeout=cfg.request_timeout)
        server.stop()  # the slots' states go to disk
        server.start()
        await server.wait_ready(client)
        # loaded and warmed up (its first decode), on another prompt, so neither is in the figure
        await stream_completion(client, server, "Hello there. Once", REPEAT_ANSWER, timeout=cfg.request_timeout)
        result = await first_then_cached(client, server, prompt, cfg)
        server.stop()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="stories")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--long-tokens", type=int, default=1000)
    a = ap.parse_args()
    model = MODELS.get(a.model, Path(a.model))
    cfg = Config(
        model=model, threads=a.threads, ctx=a.ctx, parallel=a.parallel, tokens=0, repeat=a.rounds, concurrency=(),
        history_tokens=0, answer_tokens=0, long_tokens=a.long_tokens, figures=("repeat",), start_timeout=300,
        request_timeout=600, llama_server=Path(), peer_python=Path(), logs=WORK / "logs",
    )  # fmt: skip
    tok = Tokenizer(model)
    WORK.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="kvcache-", dir=WORK))
    server = CachedLocalLLM(cfg, cache_dir)
    rows = []
    try:
        for k in range(a.rounds):
            rows.append(asyncio.run(one_round(cfg, cache_dir, tok, k, server)))
            print(f"round {k + 1}: disk {rows[-1]['disk_ms']:.1f} ms, ram {rows[-1]['ram_ms']:.1f} ms", flush=True)
    finally:
        server.stop()
        LocalLLM.cleanup(server)
        shutil.rmtree(cache_dir, ignore_errors=True)
    hits = {
        kind: server.log_path.read_text(errors="replace").count(f"prompt cache: {kind} hit") for kind in ("disk", "ram")
    }
    print(f"the last round's daemon logged {hits['disk']} disk hit(s) and {hits['ram']} RAM hit(s)")
    disk = statistics.median(r["disk_ms"] for r in rows)
    ram = statistics.median(r["ram_ms"] for r in rows)
    ratio = statistics.median(r["disk_ms"] / r["ram_ms"] for r in rows)
    print(f"\n{model.name}, {rows[0]['prompt_tokens']} prompt tokens, {a.rounds} rounds, {a.threads} threads:")
    print("| after a daemon restart, from disk (ms) | again after traffic, from RAM (ms) | disk / RAM, paired |")
    print(f"|---|---|---|\n| {disk:.1f} | {ram:.1f} | **{ratio:.2f}×** |")


if __name__ == "__main__":
    main()
