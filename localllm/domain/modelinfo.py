"""What is known of a model as `show` and `ps` tell it: its details, a loaded model, its prompt cache and
where its layers run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelDetails:
    """What `/api/tags` and `/api/show` say about a model's file."""

    format: str = "gguf"
    family: str = ""
    families: tuple[str, ...] = ()
    parameter_size: str = ""
    quantization_level: str = ""
    parent_model: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["families"] = list(self.families) or None
        return out


@dataclass(frozen=True)
class PromptCacheStats:
    """A runner's prompt cache (runner/kvstates.py): the states saved in RAM and on disk, and how often a
    prompt found its beginning already evaluated. Only prompts of 32 tokens or more count; a hit reused at
    least 32 tokens, from a slot (its sequence still held them) or from a saved state in RAM or on disk."""

    ram_bytes: int = 0
    ram_states: int = 0
    ram_limit: int = 0
    disk_bytes: int = 0
    disk_states: int = 0
    disk_limit: int = 0  # 0: no disk tier
    requests: int = 0
    slot_hits: int = 0
    ram_hits: int = 0
    disk_hits: int = 0
    cached_tokens: int = 0  # prompt tokens not evaluated again, over `requests`
    prompt_tokens: int = 0
    checkpoints: int = 0  # states saved as checkpoints (a model whose state cannot be cut back: restored whole)

    @property
    def hits(self) -> int:
        return self.slot_hits + self.ram_hits + self.disk_hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The fields and the hit rate (what `/api/ps` shows)."""
        return {**asdict(self), "hits": self.hits, "hit_rate": round(self.hit_rate, 4)}


@dataclass
class SpeculationStats:
    """A loaded model's speculative decoding (`/api/ps`): the generations that drafted, the tokens drafted and
    those the model kept."""

    requests: int = 0
    drafted: int = 0
    accepted: int = 0

    def count(self, drafted: int, accepted: int) -> None:
        self.requests += 1
        self.drafted += drafted
        self.accepted += accepted

    def as_dict(self) -> dict[str, Any]:
        rate = self.accepted / self.drafted if self.drafted else 0.0
        return {**asdict(self), "acceptance_rate": round(rate, 4)}


@dataclass(frozen=True)
class DeviceSplit:
    """One device's part of a model split across RPC workers: its name (RPC0, CPU ...), the worker it is on
    ("" for this machine), its layers, and bytes: the model's on it, and the device's free and total memory
    before the load."""

    name: str
    where: str
    layers: int
    memory: int
    free: int = 0
    total: int = 0


@dataclass
class LoadedModel:
    """A model the scheduler holds in a runner (for `/api/ps`)."""

    name: str
    digest: str
    size: int
    size_vram: int
    context_length: int
    expires_at: float
    details: ModelDetails = field(default_factory=ModelDetails)
    kv_cache_type: str = "f16"
    swa_full: bool = False  # a sliding-window model loaded with a full-size cache (LOCALLLM_SWA_FULL)
    prompt_cache: PromptCacheStats | None = None  # None: the runner reported none (an embedding model)
    speculation: SpeculationStats | None = None  # None: no generation drafted
    devices: tuple[DeviceSplit, ...] = ()  # split across RPC workers: where its layers and memory are
