"""A scripted runner for fast tests of the layers above the engine (scheduler, service, routes), and the daemon's
chat render path with the template sandbox in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import GGUFWriter

from localllm.chat.renderpool import InlineRenderer
from localllm.chat.thinking import Think
from localllm.domain.errors import EngineError
from localllm.domain.events import Done, Token
from localllm.domain.media import Media
from localllm.domain.messages import ChatMessage, Tool
from localllm.domain.modelinfo import PromptCacheStats, SpeculationStats
from localllm.runner.protocol import Job, LoadSpec, RunnerInfo
from localllm.scheduling.refs import RunnerFactory
from localllm.service.templates import Templates


def write_tiny_gguf(path: Path, *, template: str | None = None, context_length: int = 256) -> Path:
    """A metadata-complete GGUF with one small tensor: enough for the store and the service to read."""
    w = GGUFWriter(str(path), "llama")
    w.add_name("tiny-test")
    w.add_context_length(context_length)
    w.add_block_count(2)
    w.add_embedding_length(8)
    w.add_token_list(["<unk>", "<s>", "</s>", "a"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if template:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


MEDIA_TOKENS = 16  # positions a media item takes in the fake runner's count (the tiny test model's image: 16)


class FakeRunner:
    """Answers every prompt with `script`; `fail_after` makes it die mid-stream like a killed runner."""

    def __init__(self, spec: LoadSpec, script: list[str], fail_after: int | None = None, delay: float = 0.0) -> None:
        self.spec = spec
        self.script = script
        self.fail_after = fail_after
        self.delay = delay
        self.info = RunnerInfo(n_ctx=spec.n_ctx, n_layer=2)
        self.jobs: list[Job] = []
        self.stopped = False
        self.cancelled = 0
        self._dead = False
        self.prompt_cache: PromptCacheStats | None = None
        self.speculation = SpeculationStats()

    @property
    def alive(self) -> bool:
        return not (self.stopped or self._dead)

    async def generate(self, job: Job) -> AsyncGenerator[Token | Done, None]:
        self.jobs.append(job)
        finished = False
        try:
            for i, piece in enumerate(self.script):
                if self.fail_after is not None and i == self.fail_after:
                    self._dead = True
                    raise EngineError("the model runner was killed by SIGKILL", kind="crash")
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield Token(piece)
            finished = True
            yield Done(
                "stop", prompt_eval_count=3, prompt_eval_duration=10, eval_count=len(self.script), eval_duration=20
            )
        finally:
            if not finished:
                self.cancelled += 1

    async def tokenize(self, text: str, media: Sequence[Media] = ()) -> list[int]:
        """A BOS, a token per word, and MEDIA_TOKENS pseudo ids per media item."""
        return [1] + [3] * len(text.split()) + [-1] * (MEDIA_TOKENS * len(media))

    async def pieces(self, text: str, *, add_bos: bool = True) -> list[tuple[int, bytes]]:
        words = [(3, f" {w}".encode()) for w in text.split()]
        return [(1, b""), *words] if add_bos else words

    async def embed(
        self, inputs: Sequence[str] | Sequence[Sequence[int]], truncate: bool = True, *, normalize: bool = True
    ) -> tuple[list[list[float]], int]:
        raise EngineError("this fake runner computes no embeddings")

    async def detokenize(self, tokens: Sequence[int]) -> list[bytes]:
        return [b"" if t == 1 else b" w" for t in tokens]

    async def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        raise EngineError("this fake runner is no reranker")

    async def stop(self, timeout: float = 5.0) -> None:
        self.stopped = True


class FakeFactory:
    def __init__(self, script: list[str] | None = None, **kwargs: Any) -> None:
        self.script = script or ["Hello", ",", " world"]
        self.kwargs = kwargs
        self.runners: list[FakeRunner] = []

    async def __call__(self, spec: LoadSpec) -> FakeRunner:
        runner = FakeRunner(spec, self.script, **self.kwargs)
        self.runners.append(runner)
        return runner


if TYPE_CHECKING:  # mypy holds the fakes to the protocols the scheduler takes
    _factory: RunnerFactory = FakeFactory()


async def render_chat_async(
    messages: Sequence[ChatMessage],
    *,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Tool] = (),
    extra: Mapping[str, Any] | None = None,
    think: Think = None,
) -> str:
    """`messages` rendered through `template` by the daemon's one render path (`Templates.render_template`),
    with the sandbox in this process (the unit tier starts no render workers)."""
    templates = Templates(InlineRenderer())
    return await templates.render_template(
        messages, template=template, bos_token=bos_token, eos_token=eos_token, tools=tools, extra=extra, think=think
    )


def render_chat(
    messages: Sequence[ChatMessage],
    *,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Tool] = (),
    extra: Mapping[str, Any] | None = None,
    think: Think = None,
) -> str:
    """`render_chat_async` for a test outside an event loop."""
    coro = render_chat_async(
        messages, template=template, bos_token=bos_token, eos_token=eos_token, tools=tools, extra=extra, think=think
    )
    return asyncio.run(coro)
