#!/usr/bin/env python3
"""Aggregate throughput of two localllm replicas behind nginx against one daemon alone, on this machine.

Three set-ups, on one throwaway store holding the model, everything on 127.0.0.1:

    one       one daemon, the clients talk to it directly
    one+nginx the same daemon behind nginx (deploy/nginx/localllm.conf, run by deploy/standalone.py)
    two+nginx two daemons behind the same nginx config

Every daemon gets LOCALLLM_NUM_THREADS=--threads (1 by default: on a small machine that other work shares,
llama.cpp with as many threads as cores waits on its slowest thread, which swamps everything else).

Each runs `--streams` concurrent clients, each with its own X-Session-Id (so nginx spreads them), each
sending `--requests` streaming /api/generate requests of `--tokens` tokens one after the other. Tokens/s is
the sum of the answers' eval_count over the wall time. Both replicas share this machine's cores, so the
figure shows what the proxy and a second daemon cost, not a speed-up; on separate machines the replicas'
throughput adds up. See bench/README.md.

    .venv/bin/python bench/replicas.py [--model GGUF] [--streams 8] [--requests 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STANDALONE = ROOT / "deploy" / "standalone.py"
MODEL_NAME = "bench/replicas:latest"
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "stories260K.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer:\n{log.read_text()[-2000:]}")


@dataclass
class Process:
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_daemon(work: Path, store: Path, name: str, threads: int) -> Process:
    port = free_port()
    env = {
        **os.environ,
        "LOCALLLM_HOST": f"127.0.0.1:{port}",
        "LOCALLLM_MODELS": str(store),
        "LOCALLLM_NUM_THREADS": str(threads),
        "LOCALLLM_NUM_PARALLEL": "4",
        "LOCALLLM_KEEP_ALIVE": "-1",
        "LOCALLLM_REPLICA": name,
    }
    for variable in ("LOCALLLM_API_KEYS", "LOCALLLM_KEYS_FILE"):  # authentication off (no keys file beside the store)
        env.pop(variable, None)
    log = work / f"daemon-{name}.log"
    script = Path(sys.executable).parent / "localllm"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(script), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return Process(url, proc)


def start_nginx(work: Path, upstreams: list[Process]) -> Process:
    port = free_port()
    prefix = work / f"nginx-{port}"
    args = [sys.executable, str(STANDALONE), "nginx", "--listen", f"127.0.0.1:{port}", "--prefix", str(prefix)]
    for daemon in upstreams:
        args += ["--upstream", daemon.url.removeprefix("http://")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, prefix / "error.log")
    return Process(url, proc)


def one_stream(url: str, session: str, tokens: int, requests: int) -> tuple[int, Counter[str]]:
    """`requests` streaming generations one after the other; (tokens generated, answers per replica)."""
    generated, replicas = 0, Counter[str]()
    body = {
        "model": MODEL_NAME,
        "prompt": f"Once upon a time, {session} ",
        "options": {"temperature": 0.8, "seed": 1, "num_predict": tokens},
        "keep_alive": -1,
    }
    with httpx.Client(timeout=300, headers={"X-Session-Id": session}) as client:
        for _ in range(requests):
            with client.stream("POST", url + "/api/generate", json=body) as answer:
                answer.raise_for_status()
                replicas[answer.headers.get("x-localllm-replica", "?")] += 1
                for line in answer.iter_lines():
                    event = json.loads(line) if line else {}
                    if event.get("error"):
                        raise RuntimeError(event["error"])
                    if event.get("done"):
                        generated += int(event["eval_count"])
    return generated, replicas


def measure(url: str, daemons: list[Process], args: argparse.Namespace) -> tuple[int, float, Counter[str]]:
    """Tokens generated, wall seconds and answers per replica of `args.streams` clients of `url`."""
    streams, tokens, requests = args.streams, args.tokens, args.requests
    for daemon in daemons:  # the model loaded in each daemon before the clock starts
        one_stream(daemon.url, "warm-up", 4, 1)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda i: one_stream(url, f"s{i}", tokens, requests), range(streams)))
    wall = time.monotonic() - started
    total = Counter[str]()
    for _, replicas in results:
        total.update(replicas)
    return sum(n for n, _ in results), wall, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a GGUF (default: stories260K)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=3, help="requests each client sends, one after the other")
    parser.add_argument("--tokens", type=int, default=64, help="tokens each request generates (num_predict)")
    parser.add_argument("--threads", type=int, default=1, help="LOCALLLM_NUM_THREADS of every daemon")
    args = parser.parse_args()
    if shutil.which("nginx") is None and not os.access("/usr/sbin/nginx", os.X_OK):
        sys.exit("no nginx: apt-get install nginx")

    from localllm.domain.names import parse_name
    from localllm.modelstore.store import Manifest, Store

    work = Path(tempfile.mkdtemp(prefix="localllm-replicas-"))
    store = Store(work / "models")
    store.ensure()
    store.write_manifest(parse_name(MODEL_NAME), Manifest((store.add_blob_file(args.model),)))
    load_before = os.getloadavg()
    rows: list[tuple[str, int, float, Counter[str]]] = []
    running: list[Process] = []
    try:
        one = start_daemon(work, store.root, "one", args.threads)
        running.append(one)
        rows.append(("one", *measure(one.url, [one], args)))
        proxy = start_nginx(work, [one])
        running.append(proxy)
        rows.append(("one+nginx", *measure(proxy.url, [one], args)))
        for process in reversed(running):
            process.stop()
        running.clear()
        pair = [start_daemon(work, store.root, name, args.threads) for name in ("a", "b")]
        running += pair
        proxy = start_nginx(work, pair)
        running.append(proxy)
        rows.append(("two+nginx", *measure(proxy.url, pair, args)))
    finally:
        for process in reversed(running):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"model {args.model.name}, {args.streams} streams x {args.requests} requests x {args.tokens} tokens, ")
    print(f"{args.threads} thread(s) per daemon, {os.cpu_count()} cores; load average (1 min) before ", end="")
    print(f"{load_before[0]:.2f}, after {load_after[0]:.2f}\n")
    print("| set-up | tokens | wall s | tokens/s | vs one | answers per replica |")
    print("|---|---|---|---|---|---|")
    base = rows[0][1] / rows[0][2]
    for name, generated, wall, replicas in rows:
        spread = ", ".join(f"{k} {v}" for k, v in sorted(replicas.items()))
        rate = generated / wall
        print(f"| {name} | {generated} | {wall:.1f} | {rate:.0f} | {rate / base:.2f} | {spread} |")


if __name__ == "__main__":
    main()
