#!/usr/bin/env python3
"""Tokens/s of a model split across two RPC workers against the same model on one machine (docs/workers.md).

Everything runs here, on 127.0.0.1: two `localllm worker`s, a daemon with LOCALLLM_RPC_SERVERS naming them
(every layer on the workers) and a daemon without. Both pull the model from the test suite's Hub stand-in,
warm it up, then generate greedily `--repeats` times, taking turns; the table gives the median decode and
prompt rates from the daemons' own counters (eval_count / eval_duration). On loopback this measures what
the split costs (a round trip per layer group and token), not what it gains across machines.

    .venv/bin/python bench/workers.py                                   # stories260K
    .venv/bin/python bench/workers.py --gguf /path/to/bench-135m-f16.gguf --threads 2
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.hubstub import HubStub  # noqa: E402  (the Hub stand-in the test suite uses)

MODELS = Path(os.environ.get("LOCALLLM_TEST_MODELS") or ROOT.parent / "shared" / "models").resolve()
LOCALLLM = [str(Path(sys.executable).parent / "localllm")]
PROMPT = "Once upon a time"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def generate(url: str, model: str, num_predict: int) -> dict[str, Any]:
    body = {
        "model": model,
        "prompt": PROMPT,
        "stream": False,
        "options": {"temperature": 0, "num_predict": num_predict},
    }
    r = httpx.post(url + "/api/generate", json=body, timeout=600)
    r.raise_for_status()
    return dict(r.json())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=MODELS / "stories260K.gguf")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-predict", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="threads of each worker and of the daemon's runner")
    ap.add_argument("--ctx", type=int, default=512)
    args = ap.parse_args()
    repo = "bench/" + args.gguf.stem
    model = f"hf.co/{repo}"
    procs: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory(prefix="localllm-workers-") as tmp,
        HubStub({repo: {args.gguf.name: args.gguf}}) as hub,
    ):
        work = Path(tmp)
        try:
            endpoints = []
            for i in range(2):
                port = free_port()
                cmd = [*LOCALLLM, "worker", "--port", str(port), "--threads", str(args.threads)]
                procs.append(start(cmd, dict(os.environ), work / f"worker{i}.log"))
                wait_port(port, procs[-1])
                endpoints.append(f"127.0.0.1:{port}")
            urls: dict[str, str] = {}
            loads: dict[str, float] = {}
            for name, servers in (("one machine", ""), ("two workers", ",".join(endpoints))):
                port = free_port()
                env = {
                    **os.environ,
                    "LOCALLLM_HOST": f"127.0.0.1:{port}",
                    "LOCALLLM_MODELS": str(work / name / "models"),
                    "HF_ENDPOINT": hub.url,
                    "HF_HOME": str(work / name / "hf"),
                    "LOCALLLM_NUM_THREADS": str(args.threads),
                    "LOCALLLM_NUM_PARALLEL": "1",
                    "LOCALLLM_CONTEXT_LENGTH": str(args.ctx),
                    "LOCALLLM_KEEP_ALIVE": "-1",
                    "LOCALLLM_RPC_SERVERS": servers,
                }
                procs.append(start([*LOCALLLM, "serve"], env, work / f"{name}.log"))
                wait_port(port, procs[-1])
                url = f"http://127.0.0.1:{port}"
                subprocess.run([*LOCALLLM, "pull", model], env=env, check=True, capture_output=True)
                loads[name] = generate(url, model, 8)["load_duration"] / 1e9  # load and warm up
                urls[name] = url
            rates: dict[str, list[float]] = {name: [] for name in urls}
            prompt_rates: dict[str, list[float]] = {name: [] for name in urls}
            texts: dict[str, str] = {}
            for i in range(args.repeats):
                order = list(urls) if i % 2 == 0 else list(reversed(urls))
                for name in order:
                    out = generate(urls[name], model, args.num_predict)
                    rates[name].append(out["eval_count"] / out["eval_duration"] * 1e9)
                    prompt_rates[name].append(out["prompt_eval_count"] / max(1, out["prompt_eval_duration"]) * 1e9)
                    texts[name] = out["response"]
            ps = httpx.get(urls["two workers"] + "/api/ps").json()["models"][0].get("devices")
            print(
                f"model {args.gguf.name}, {args.repeats} repeats of {args.num_predict} tokens, {args.threads} thread(s)"
            )
            print(f"split: {[(d['name'], d['where'], d['layers']) for d in ps or []]}")
            print(f"same text: {texts['one machine'] == texts['two workers']}")
            print("| | one machine | two workers (loopback) | ratio |")
            print("|---|---|---|---|")
            one, two = statistics.median(rates["one machine"]), statistics.median(rates["two workers"])
            print(f"| decode tokens/s | {one:.1f} | {two:.1f} | {two / one:.2f} |")
            p1, p2 = statistics.median(prompt_rates["one machine"]), statistics.median(prompt_rates["two workers"])
            print(f"| prompt tokens/s ({len(PROMPT.split())}-word prompt) | {p1:.1f} | {p2:.1f} | {p2 / p1:.2f} |")
            l1, l2 = loads["one machine"], loads["two workers"]
            print(f"| load s (first request) | {l1:.2f} | {l2:.2f} | {l2 / l1:.2f} |")
        finally:
            for proc in reversed(procs):
                stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
