"""Speculative decoding on a copy-heavy workload: rewrite a ~500-token code file with one change (greedy), with
speculation off and on, in localllm (prompt lookup; a draft model with --draft) and in llama-server (its n-gram
modes and, with --draft, its draft model), each server started alone on the same GGUF and threads.

    .venv/bin/python bench/speculate.py --model bench/models/bench-135m-f16.gguf --threads 2
    .venv/bin/python bench/speculate.py --model stories --only localllm --repeat 1       # a smoke run
    .venv/bin/python bench/speculate.py --model M.gguf --draft D.gguf                    # draft models too

The figure is decode tokens per second of one stream (the answer's tokens over the time after its first one:
localllm's eval_count / eval_duration, llama-server's timings.predicted_n / predicted_ms), the median of
--repeat runs, and its ratio to the same server without speculation; localllm's rows also give the tokens
drafted and kept (draft_count, draft_accepted_count) and the character where the answer first differs from
the one without speculation ("same" where it does not).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from servers import LOCALLLM_MODEL_NAME, Config, LlamaServer, LocalLLM, Server

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"stories": ROOT.parent / "shared" / "models" / "stories260K.gguf"}

# A ~500-token file to rewrite with one change: every line of it is in the prompt, so most of the answer is.
CODE = """import json
import os
from dataclasses import dataclass, field


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 1
    tags: list[str] = field(default_factory=list)

    def total(self) -> float:
        return self.price * self.quantity


@dataclass
class Cart:
    owner: str
    items: list[Item] = field(default_factory=list)

    def add(self, item: Item) -> None:
        for existing in self.items:
            if existing.name == item.name:
                existing.quantity += item.quantity
                return
        self.items.append(item)

    def remove(self, name: str) -> bool:
        for i, existing in enumerate(self.items):
            if existing.name == name:
                del self.items[i]
                return True
        return False

    def total(self) -> float:
        return sum(item.total() for item in self.items)

    def tagged(self, tag: str) -> list[Item]:
        return [item for item in self.items if tag in item.tags]


def load_cart(path: str) -> Cart:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    cart = Cart(data["owner"])
    for raw in data.get("items", []):
        cart.add(Item(raw["name"], float(raw["price"]), int(raw.get("quantity", 1)), list(raw.get("tags", []))))
    return cart


def save_cart(cart: Cart, path: str) -> None:
    data = {
        "owner": cart.owner,
        "items": [
            {"name": i.name, "price": i.price, "quantity": i.quantity, "tags": i.tags} for i in cart.items
        ],
    }
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
"""
PROMPT = (
    "Rewrite this file with one change: rename the method `tagged` to `with_tag`. Answer with the whole file.\n\n"
    f"```python\n{CODE}```\n\nThe whole file, with `tagged` renamed to `with_tag`:\n\n```python\n"
)
LLAMA_SERVER_MODES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod")


@dataclass
class Run:
    tps: float
    text: str
    drafted: int = 0
    accepted: int = 0


async def localllm_run(server: Server, client: httpx.AsyncClient, tokens: int, options: dict[str, Any]) -> Run:
    body = {
        "model": LOCALLLM_MODEL_NAME,
        "prompt": PROMPT,
        "raw": True,
        "stream": False,
        "options": {"temperature": 0, "num_predict": tokens, **options},
    }
    r = (await client.post(server.base_url + "/api/generate", json=body, timeout=600)).json()
    if "error" in r:
        raise RuntimeError(r["error"])
    # eval_duration runs from the first token: the first is not in it
    tps = (r["eval_count"] - 1) / (r["eval_duration"] / 1e9) if r["eval_duration"] else 0.0
    return Run(tps, r["response"], r.get("draft_count", 0), r.get("draft_accepted_count", 0))


async def llama_server_run(server: Server, client: httpx.AsyncClient, tokens: int) -> Run:
    body = {"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "cache_prompt": False, "stream": False}
    r = (await client.post(server.base_url + "/completion", json=body, timeout=600)).json()
    t = r["timings"]
    return Run(
        t["predicted_n"] / (t["predicted_ms"] / 1000), r["content"], t.get("draft_n", 0), t.get("draft_n_accepted", 0)
    )


class SpecLlamaServer(LlamaServer):
    def __init__(self, cfg: Config, extra: list[str], label: str) -> None:
        super().__init__(cfg)
        self.extra, self.name = extra, label
        self.log_path = cfg.logs / f"{label}.log"

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


def diverges(a: str, b: str) -> str:
    at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
    if at is None:
        return "same" if len(a) == len(b) else f"at {min(len(a), len(b))} (length)"
    return f"at {at}"


async def measure(server: Server, runs: dict[str, Any], repeat: int, tokens: int) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    server.start()
    try:
        async with httpx.AsyncClient() as client:
            await server.wait_ready(client)
            for label, options in runs.items():
                await _one(server, client, tokens, options)  # a warm-up: the load, the prompt's first evaluation
                out[label] = [await _one(server, client, tokens, options) for _ in range(repeat)]
    finally:
        server.stop()
    return out


async def _one(server: Server, client: httpx.AsyncClient, tokens: int, options: Any) -> Run:
    if isinstance(server, LocalLLM):
        return await localllm_run(server, client, tokens, options)
    return await llama_server_run(server, client, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--draft", default="", help="a draft model of the same vocabulary (GGUF)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--num-draft", type=int, default=16)
    parser.add_argument("--only", default="localllm,llama-server")
    parser.add_argument("--llama-server", type=Path, default=ROOT / "bench" / ".build" / "llama-server")
    args = parser.parse_args()
    if args.draft:  # the servers run in other folders: llama-server would not find a relative path
        args.draft = str(Path(args.draft).resolve())
    model = MODELS.get(args.model, Path(args.model)).resolve()
    cfg = Config(
        model=model, threads=args.threads, ctx=2048, parallel=4, tokens=args.tokens, repeat=args.repeat,
        concurrency=(), history_tokens=0, answer_tokens=0, long_tokens=0, figures=(), start_timeout=120,
        request_timeout=600, llama_server=args.llama_server, peer_python=Path(sys.executable),
        logs=ROOT / "bench" / ".work" / "logs",
    )  # fmt: skip
    only = set(args.only.split(","))
    rows: list[tuple[str, str, list[Run], list[Run]]] = []
    if "localllm" in only:
        runs: dict[str, Any] = {"off": {"num_draft": 0}, "ngram": {"draft_ngram": True, "num_draft": args.num_draft}}
        result = asyncio.run(measure(LocalLLM(cfg), runs, args.repeat, args.tokens))
        rows.append(("localllm", "prompt lookup (draft_ngram)", result["ngram"], result["off"]))
        if args.draft:
            rows.append(("localllm", "draft model (DRAFT)", *_draft_rows(cfg, args)))
    if "llama-server" in only:
        plain = asyncio.run(measure(SpecLlamaServer(cfg, [], "llama-server"), {"off": None}, args.repeat, args.tokens))
        for mode in LLAMA_SERVER_MODES:
            extra = ["--spec-type", mode]  # each n-gram mode at llama-server's own defaults
            got = asyncio.run(
                measure(SpecLlamaServer(cfg, extra, f"llama-server-{mode}"), {mode: None}, args.repeat, args.tokens)
            )
            rows.append(("llama-server", mode, got[mode], plain["off"]))
        if args.draft:
            extra = ["--spec-type", "draft-simple", "-md", args.draft, "--spec-draft-n-max", str(args.num_draft)]
            got = asyncio.run(
                measure(SpecLlamaServer(cfg, extra, "llama-server-draft"), {"d": None}, args.repeat, args.tokens)
            )
            rows.append(("llama-server", "draft model (-md)", got["d"], plain["off"]))
    print(f"model {model.name}, {args.threads} threads, {args.tokens} tokens, median of {args.repeat}\n")
    print("| server | speculation | decode tok/s | without | × | drafted | kept | answer vs without |")
    print("|---|---|---|---|---|---|---|---|")
    for server, mode, on, off in rows:
        a, b = statistics.median(r.tps for r in on), statistics.median(r.tps for r in off)
        print(
            f"| {server} | {mode} | {a:.1f} | {b:.1f} | {a / b:.2f} | {on[-1].drafted} | {on[-1].accepted} "
            f"| {diverges(off[-1].text, on[-1].text)} |"
        )


def _draft_rows(cfg: Config, args: argparse.Namespace) -> tuple[list[Run], list[Run]]:
    """localllm with the draft model: a model created FROM the bench model with DRAFT, in the throwaway store."""

    class WithDraft(LocalLLM):
        def prepare(self) -> None:
            from localllm.domain.names import parse_name
            from localllm.modelstore.store import MEDIA_DRAFT, Layer, Manifest, Store

            super().prepare()
            assert self.store_dir is not None
            store = Store(self.store_dir)
            model = store.add_blob_file(cfg.model)
            draft = store.add_blob_file(Path(args.draft))
            store.write_manifest(
                parse_name(LOCALLLM_MODEL_NAME), Manifest((model, Layer(MEDIA_DRAFT, draft.digest, draft.size)))
            )

    runs = {"off": {"num_draft": 0}, "draft": {"num_draft": args.num_draft}}
    result = asyncio.run(measure(WithDraft(cfg), runs, args.repeat, args.tokens))
    return result["draft"], result["off"]


if __name__ == "__main__":
    main()
