"""What the scheduler is given and what it hands out: a model to load (`ModelRef`: its load spec, its geometry for
the memory estimate, what `/api/ps` reports) and the runner serving it (`Runner`, the protocol a
`runner.process.RunnerProcess` or a test's fake meets), with the factory and probe types injected into it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..domain.events import Done, Token
from ..domain.media import Media
from ..domain.modelinfo import ModelDetails, PromptCacheStats, SpeculationStats
from ..runner.protocol import Job, LoadSpec, RunnerInfo
from ..runner.workers import WorkerMemory
from .memory import DraftFile, Estimate, ModelShape
from .memory import estimate as estimate_memory


class Runner(Protocol):
    """A loaded model that serves requests (`runner.process.RunnerProcess`, or a fake in tests)."""

    @property
    def info(self) -> RunnerInfo: ...

    @property
    def alive(self) -> bool: ...

    @property
    def prompt_cache(self) -> PromptCacheStats | None: ...

    @property
    def speculation(self) -> SpeculationStats: ...

    def generate(self, job: Job) -> AsyncGenerator[Token | Done, None]: ...

    async def tokenize(self, text: str, media: Sequence[Media] = ()) -> list[int]: ...

    async def pieces(self, text: str, *, add_bos: bool = True) -> list[tuple[int, bytes]]: ...

    async def embed(
        self, inputs: Sequence[str] | Sequence[Sequence[int]], truncate: bool = True, *, normalize: bool = True
    ) -> tuple[list[list[float]], int]: ...

    async def detokenize(self, tokens: Sequence[int]) -> list[bytes]: ...

    async def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]: ...

    async def stop(self, timeout: float = 5.0) -> None: ...


RunnerFactory = Callable[[LoadSpec], Awaitable[Runner]]
WorkerProbe = Callable[[Sequence[str]], Awaitable[list[WorkerMemory]]]


@dataclass(frozen=True)
class ModelRef:
    """A model as the scheduler sees it: what to load, its geometry (for the memory estimate), and what to
    report in `/api/ps`."""

    name: str
    digest: str
    spec: LoadSpec
    size: int  # bytes of the model file(s): the weights
    details: ModelDetails = field(default_factory=ModelDetails)
    shape: ModelShape = field(default_factory=ModelShape)
    projector: int = 0  # bytes of its multimodal projector file (0: none)
    draft: DraftFile | None = None  # its draft model (Modelfile DRAFT), loaded beside it; `size` excludes it

    def estimate(self) -> Estimate:
        spec = self.spec
        return estimate_memory(
            self.size,
            self.shape,
            n_ctx=spec.n_ctx,
            n_parallel=spec.n_parallel,
            kv_cache_type=spec.kv_cache_type,
            projector=self.projector,
            n_batch=spec.n_batch,
            swa_full=spec.swa_full,
            draft=self.draft,
        )
