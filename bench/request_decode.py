"""What reading an OpenAI chat body costs on the request path: µs per body of 1 KB and of 1 MB (decoded and
translated onto a ChatRequest), and the peak memory of decoding a 60 MB body, for each way of doing it.

    .venv/bin/python bench/request_decode.py            # this checkout: msgspec wire models, and pydantic v2
    PYTHONPATH=<a checkout before wire.py> .venv/bin/python bench/request_decode.py   # the json + hand-walk path

docs/request-path.md ("Reading the body") has the figures. Each peak is measured in a fresh process, by
tracemalloc, over the body's own bytes (read before it starts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Annotated, Any, Literal

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly. " * 6}
SMALL = {
    "model": "m",
    "messages": [SYSTEM, {"role": "user", "content": "Tell me about the moon, in three sentences. " * 8}],
    "temperature": 0.7,
    "max_tokens": 200,
    "stream": True,
}


def body(size: int) -> bytes:
    text = "All work and no play makes Jack a dull boy. "
    content = text * max(1, (size - 200) // len(text))
    return json.dumps({**SMALL, "messages": [SYSTEM, {"role": "user", "content": content}]}).encode()


def candidates() -> dict[str, Callable[[bytes], Any]]:
    out: dict[str, Callable[[bytes], Any]] = {}
    try:
        from localllm.server.dialects.openai import wire
        from localllm.server.dialects.openai.requests import to_chat_request
        from localllm.server.wire import decode

        out["msgspec wire model, translated"] = lambda raw: to_chat_request(decode(raw, wire.ChatCompletionRequest))
        out["msgspec wire model, decoded only"] = lambda raw: decode(raw, wire.ChatCompletionRequest)
    except ImportError:  # a checkout before the wire models: json.loads and the hand-walked parser
        from localllm.server.dialects.openai.requests import to_chat_request as old

        out["json + hand walk, translated (before wire.py)"] = lambda raw: old(json.loads(raw))
    out["json.loads only"] = json.loads
    model = _pydantic()
    if model is not None:
        out["pydantic v2 (validation only)"] = model.model_validate_json
    return out


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError:
        return None

    class Part(pydantic.BaseModel):
        type: Literal["text"]
        text: str

    class Message(pydantic.BaseModel):
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: str | list[Part] | None = None
        tool_call_id: str | None = None

    class Chat(pydantic.BaseModel):
        model: str | None = None
        messages: Annotated[list[Message], pydantic.Field(min_length=1, max_length=4096)]
        temperature: Annotated[float, pydantic.Field(ge=0, le=2)] | None = None
        max_tokens: Annotated[int, pydantic.Field(ge=1)] | None = None
        stream: bool = False
        logit_bias: Annotated[dict[str, float], pydantic.Field(max_length=1024)] = {}
        tools: Annotated[list[dict[str, Any]], pydantic.Field(max_length=128)] | None = None

    return Chat


def per_call_us(fn: Callable[[bytes], Any], raw: bytes, rounds: int = 7, seconds: float = 0.2) -> float:
    """The best of `rounds` rounds' mean (a shared machine's noise only ever adds time)."""
    fn(raw)
    best = float("inf")
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(raw)
            n += 1
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def peak(name: str, path: str) -> None:
    """In this (fresh) process: the peak RSS that decoding the body in `path` adds."""
    fn = candidates()[name]
    with open(path, "rb") as f:
        raw = f.read()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn(raw)
    except ValueError:  # InvalidRequest: the wire models refuse more text than any prompt, once decoded
        pass
    took = time.perf_counter() - start
    _, added = tracemalloc.get_traced_memory()
    print(json.dumps({"added": added, "seconds": took}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        peak(sys.argv[2], sys.argv[3])
        return
    small, large, huge = json.dumps(SMALL).encode(), body(1 << 20), 60 << 20
    print(f"bodies: {len(small)} bytes, {len(large)} bytes, {huge >> 20} MiB")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body(huge))
        f.flush()
        table(small, large, huge, f.name)


def table(small: bytes, large: bytes, huge: int, path: str) -> None:
    print("| path | 1 KB body (µs) | 1 MB body (µs) | 60 MB body: time (ms) | peak memory added (MiB) | × size |")
    print("|---|---|---|---|---|---|")
    for name, fn in candidates().items():
        out = subprocess.run(
            [sys.executable, __file__, "--peak", name, path], capture_output=True, text=True, check=True
        )
        p = json.loads(out.stdout)
        print(
            f"| {name} | {per_call_us(fn, small):.0f} | {per_call_us(fn, large):.0f} | {p['seconds'] * 1000:.0f} "
            f"| {p['added'] / (1 << 20):.0f} | {p['added'] / huge:.1f} |"
        )


if __name__ == "__main__":
    main()
