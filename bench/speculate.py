"""Speculative decoding on a copy-heavy workload: rewrite a ~500-token code file with one change (greedy), with
speculation off and on, in localllm (prompt lookup; a draft model with --draft) and in llama-server (its n-gram
modes and, with --draft, its draft model), on the same GGUF and threads. Every server is up at once (llama-server
once per mode, since its mode is a flag), and the answers are interleaved: a round asks each way once, the order
rotated every round, so a busy moment of the machine falls on all of them alike.

    .venv/bin/python bench/speculate.py --model bench/models/bench-135m.gguf --threads 2
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


@dataclass
class Entry:
    """One way of answering: a server and (localllm) the request's options; `base` names the entry it is
    compared with (the same server, or its twin, without speculation)."""

    server: Server
    options: dict[str, Any] | None
    base: str


async def measure(entries: dict[str, Entry], repeat: int, tokens: int) -> dict[str, list[Run]]:
    """Every server up at once; one warm-up answer per entry, then `repeat` rounds of one answer per entry, the
    order rotated each round, so every figure sees the same machine."""
    servers = list({id(e.server): e.server for e in entries.values()}.values())
    out: dict[str, list[Run]] = {label: [] for label in entries}
    for server in servers:
        server.start()
    try:
        async with httpx.AsyncClient() as client:
            for server in servers:
                await server.wait_ready(client)
            labels = list(entries)
            for label in labels:  # a warm-up: the load, the prompt's first evaluation
                await _one(entries[label].server, client, tokens, entries[label].options)
            for r in range(repeat):
                k = r % len(labels)
                for label in labels[k:] + labels[:k]:
                    out[label].append(await _one(entries[label].server, client, tokens, entries[label].options))
    finally:
        for server in servers:
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
    parser.add_argument("--num-draft", type=int, default=64, help="num_draft (and --spec-draft-n-max with --draft)")
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
    entries: dict[str, Entry] = {}
    if "localllm" in only:
        ours = LocalLLM(cfg)
        entries["localllm|off"] = Entry(ours, {"num_draft": 0}, "")
        lookup = {"draft_ngram": True, "num_draft": args.num_draft}
        entries["localllm|prompt lookup (draft_ngram)"] = Entry(ours, lookup, "localllm|off")
        if args.draft:
            with_draft = _with_draft(cfg, Path(args.draft))
            entries["localllm|off (the DRAFT model)"] = Entry(with_draft, {"num_draft": 0}, "")
            draft = {"num_draft": args.num_draft}
            entries["localllm|draft model (DRAFT)"] = Entry(with_draft, draft, "localllm|off (the DRAFT model)")
    if "llama-server" in only:
        entries["llama-server|off"] = Entry(SpecLlamaServer(cfg, [], "llama-server"), None, "")
        for mode in LLAMA_SERVER_MODES:  # each n-gram mode at llama-server's own defaults
            server = SpecLlamaServer(cfg, ["--spec-type", mode], f"llama-server-{mode}")
            entries[f"llama-server|{mode}"] = Entry(server, None, "llama-server|off")
        if args.draft:
            extra = ["--spec-type", "draft-simple", "-md", args.draft, "--spec-draft-n-max", str(args.num_draft)]
            server = SpecLlamaServer(cfg, extra, "llama-server-draft")
            entries["llama-server|draft model (-md)"] = Entry(server, None, "llama-server|off")
    result = asyncio.run(measure(entries, args.repeat, args.tokens))
    print(f"model {model.name}, {args.threads} threads, {args.tokens} tokens, median of {args.repeat} (interleaved)\n")
    print("| server | speculation | decode tok/s | without | × | drafted | kept | answer vs without |")
    print("|---|---|---|---|---|---|---|---|")
    for label, entry in entries.items():
        if not entry.base:
            continue
        on, off = result[label], result[entry.base]
        a, b = statistics.median(r.tps for r in on), statistics.median(r.tps for r in off)
        server, mode = label.split("|")
        print(
            f"| {server} | {mode} | {a:.1f} | {b:.1f} | {a / b:.2f} | {on[-1].drafted} | {on[-1].accepted} "
            f"| {diverges(off[-1].text, on[-1].text)} |"
        )


def _with_draft(cfg: Config, draft: Path) -> LocalLLM:
    """localllm serving a model created FROM the bench model with DRAFT, in its own throwaway store."""

    class WithDraft(LocalLLM):
        def prepare(self) -> None:
            from localllm.domain.names import parse_name
            from localllm.modelstore.store import MEDIA_DRAFT, Layer, Manifest, Store

            super().prepare()
            assert self.store_dir is not None
            store = Store(self.store_dir)
            model = store.add_blob_file(cfg.model)
            layer = store.add_blob_file(draft)
            store.write_manifest(
                parse_name(LOCALLLM_MODEL_NAME), Manifest((model, Layer(MEDIA_DRAFT, layer.digest, layer.size)))
            )

    server = WithDraft(cfg)
    server.name = "localllm-draft"
    server.log_path = cfg.logs / "localllm-draft.log"
    return server


if __name__ == "__main__":
    main()
