"""How much memory a model needs, how much the machine has free, and how many of its layers fit on the GPU.

An estimate follows what llama.cpp allocates: the weights (the size of the GGUF file), the KV cache (K and V
for every layer and for every token of every sequence slot, in the bytes of the KV cache type; a sliding-window
layer of a known pattern keeps its window and a micro-batch only, unless `swa_full`) and an allowance for the
compute buffers; for a model with a draft model (Modelfile DRAFT), the draft's weights, its own KV cache (the
same slots and context) and compute buffer; for a model with a multimodal projector, the projector's weights
(its file) and an allowance for its own compute buffer (mtmd's image/audio encoder graph), kept whole on the GPU
when any of the model is (as llama.cpp's mtmd offloads it by default). The probe of free memory (RAM from /proc/meminfo,
VRAM from `nvidia-smi`) is injected into the scheduler, so tests drive it with fakes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..domain.errors import InvalidRequest
from ..domain.options import UBATCH_MAX
from ..observability.machine import Memory

log = logging.getLogger("localllm.memory")

MiB = 1 << 20
GiB = 1 << 30
# Bytes per block and elements per block of each KV cache type (ggml's layouts): f16 is 2 bytes an element;
# q8_0 is 32 int8 and one f16 scale (34 bytes per 32), q4_0 is 32 nibbles and one f16 scale (18 bytes per 32).
KV_BLOCKS: dict[str, tuple[int, int]] = {"f16": (2, 1), "q8_0": (34, 32), "q4_0": (18, 32)}
MIN_COMPUTE = 64 * MiB
# The projector's compute buffer, as a share of its weights: rough (llama.cpp sizes it for the largest image
# its encoder takes: tens of MiB for a small SigLIP, hundreds for Gemma 3's or Qwen2.5-VL's), never below
# MIN_COMPUTE. A runner's load log of mtmd's "compute buffer size" is what to refine it with.
PROJECTOR_COMPUTE_DIVISOR = 2
GPU_OVERHEAD = 512 * MiB  # VRAM left free for the CUDA context and fragmentation
# llama.cpp's pattern of sliding-window layers where a GGUF does not write `attention.sliding_window_pattern`:
# every n-th layer is a global one (the last of each n). Other sliding-window architectures are counted with
# every layer at the full context (an upper bound).
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}
SWA_PAD = 256  # llama.cpp pads a window layer's cache to a multiple of this many cells


def format_bytes(n: int) -> str:
    if abs(n) >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / MiB:.0f} MiB"


# -- what a model needs ------------------------------------------------------------------------------


def _number(value: Any) -> int:
    """A metadata value as a count: per-layer arrays (some models vary heads by layer) give their largest."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return max((v for v in value if isinstance(v, int) and not isinstance(v, bool)), default=0)
    return 0


def _window_layers(pattern: Any, block_count: int) -> int:
    """How many of `block_count` layers slide a window: `pattern` is a GGUF's per-layer flags, or n (every
    n-th layer global, as llama.cpp's `set_swa_pattern`), or None (not known: 0)."""
    if isinstance(pattern, list):
        return sum(1 for flag in pattern[:block_count] if flag is True)
    if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 0:
        return 0
    return block_count if pattern == 0 else block_count - block_count // pattern


@dataclass(frozen=True)
class ModelShape:
    """The geometry a model's memory depends on, from its GGUF metadata; 0 means unknown."""

    block_count: int = 0
    embedding_length: int = 0
    head_count: int = 0
    head_count_kv: int = 0
    key_length: int = 0
    value_length: int = 0
    sliding_window: int = 0  # the window of its sliding-window layers (Gemma 2/3, gpt-oss...); 0: none
    window_layers: int = 0  # how many layers are sliding-window ones (0: none, or the pattern is not known)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], architecture: str) -> ModelShape:
        def get(key: str) -> int:
            return max(0, _number(metadata.get(f"{architecture}.{key}")))

        window = get("attention.sliding_window")
        pattern = metadata.get(f"{architecture}.attention.sliding_window_pattern", SWA_PATTERNS.get(architecture))
        return cls(
            window_layers=_window_layers(pattern, get("block_count")) if window else 0,
            block_count=get("block_count"),
            embedding_length=get("embedding_length"),
            head_count=get("attention.head_count"),
            head_count_kv=get("attention.head_count_kv"),
            key_length=get("attention.key_length"),
            value_length=get("attention.value_length"),
            sliding_window=get("attention.sliding_window"),
        )

    def head_sizes(self) -> tuple[int, int]:
        """Elements of one K head and one V head (0: unknown)."""
        key = self.key_length or (self.embedding_length // self.head_count if self.head_count else 0)
        return key, self.value_length or key

    def kv_width(self) -> int:
        """Elements of K plus V per token and layer (n_embd_k_gqa + n_embd_v_gqa in llama.cpp)."""
        kv_heads = self.head_count_kv or self.head_count
        key, value = self.head_sizes()
        if not (kv_heads and key):
            return 2 * self.embedding_length  # no head counts: assume full multi-head attention
        return kv_heads * (key + value)

    def kv_cells(self, n_ctx: int, *, n_batch: int, swa_full: bool) -> int:
        """KV cells per sequence slot, summed over the layers: `n_ctx` for a global layer; a sliding-window
        layer's window and a micro-batch, padded (llama.cpp's `llama_kv_cache_iswa`), unless `swa_full`."""
        window = n_ctx
        if self.window_layers and not swa_full:
            window = min(n_ctx, -(-min(n_ctx, self.sliding_window + min(n_batch, UBATCH_MAX)) // SWA_PAD) * SWA_PAD)
        return (self.block_count - self.window_layers) * n_ctx + self.window_layers * window

    def holds(self, kv_cache_type: str) -> bool:
        """Whether llama.cpp can keep this model's K and V as `kv_cache_type`: a quantised type's blocks must
        divide every head (stories260K's heads of 8 cannot be q8_0). An unknown shape is left to llama.cpp."""
        block = KV_BLOCKS[kv_cache_type][1]
        return all(size % block == 0 for size in self.head_sizes())


@dataclass(frozen=True)
class DraftFile:
    """A draft model (Modelfile DRAFT) loaded beside a model to speculate: its GGUF's bytes and geometry."""

    size: int
    shape: ModelShape


@dataclass(frozen=True)
class Estimate:
    """Bytes a loaded model takes; `layers` is its count of repeating layers (0: unknown); `projector` the
    bytes of its multimodal projector, weights and compute buffer (0: none), which are not split by layer;
    `draft` those of its draft model, weights, KV cache and compute buffer (0: none), which loads with the
    model's GPU layer count (so it is split with the layers)."""

    weights: int
    kv: int
    compute: int
    layers: int
    projector: int = 0
    draft: int = 0

    @property
    def layered(self) -> int:
        """Weights and KV cache, the draft model's too: what is split across the GPU and the CPU layer by
        layer."""
        return self.weights + self.kv + self.draft

    @property
    def size(self) -> int:
        """Weights, KV cache, draft model and projector: what `/api/ps` reports as the model's size."""
        return self.layered + self.projector

    @property
    def total(self) -> int:
        return self.size + self.compute

    def on_gpu(self, gpu_layers: int) -> int:
        """Bytes in VRAM with `gpu_layers` layers offloaded (more than `layers`: the output layer too); the
        projector goes with the first layer."""
        if gpu_layers <= 0:
            return 0
        if self.layers <= 0 or gpu_layers >= self.layers:
            return self.total
        return min(self.total, math.ceil(gpu_layers * self.layered / self.layers) + self.compute + self.projector)


def kv_bytes(elements: int, kv_cache_type: str = "f16") -> int:
    """Bytes of `elements` K or V values stored as `kv_cache_type`."""
    block_bytes, block_elements = KV_BLOCKS[kv_cache_type]
    return -(-elements * block_bytes // block_elements)


def estimate(
    weights: int,
    shape: ModelShape,
    *,
    n_ctx: int,
    n_parallel: int,
    kv_cache_type: str = "f16",
    projector: int = 0,
    n_batch: int = UBATCH_MAX,
    swa_full: bool = False,
    draft: DraftFile | None = None,
) -> Estimate:
    """What a model of `weights` bytes needs with `n_parallel` sequences of `n_ctx` tokens each (batches of
    `n_batch`; sliding-window layers at full size with `swa_full`), with a projector of `projector` bytes (0:
    none) and a draft model (which gets a context of the same slots, cache type and window setting)."""

    def kv(shape: ModelShape) -> int:
        cells = shape.kv_cells(n_ctx, n_batch=n_batch, swa_full=swa_full)
        return kv_bytes(cells * max(1, n_parallel) * shape.kv_width(), kv_cache_type)

    return Estimate(
        weights=weights,
        kv=kv(shape),
        compute=max(MIN_COMPUTE, weights // 20),
        layers=shape.block_count,
        projector=projector_bytes(projector),
        draft=draft.size + kv(draft.shape) + max(MIN_COMPUTE, draft.size // 20) if draft is not None else 0,
    )


def projector_bytes(size: int) -> int:
    """What a projector file of `size` bytes takes loaded: its weights and an allowance for its compute buffer."""
    return size + max(MIN_COMPUTE, size // PROJECTOR_COMPUTE_DIVISOR) if size > 0 else 0


def kv_cache_type_for(settings: Settings, option: str | None, shape: ModelShape, *, embedding: bool) -> str:
    """The KV cache type a model loads with: its `kv_cache_type` option (a Modelfile's or the request's), else
    LOCALLLM_KV_CACHE_TYPE. An embedding model keeps f16 (its cache lives for one batch), and so does a model
    whose heads the daemon's quantised type does not divide (logged). A quantised option that cannot be
    honoured (flash attention off, heads it does not divide) is a 400 naming it."""
    if embedding:
        return "f16"
    value = option or settings.kv_cache_type
    if value == "f16":
        return value
    if settings.flash_attention == "off":  # LOCALLLM_KV_CACHE_TYPE with it off stops the daemon at start
        raise InvalidRequest(
            f"options.kv_cache_type {value} needs flash attention, but LOCALLLM_FLASH_ATTENTION is off "
            "(use f16, or start the daemon with flash attention auto or on)",
            field=_FIELD,
        )
    if not shape.holds(value):
        sizes = " and ".join(str(size) for size in sorted(set(shape.head_sizes())))
        why = f"{value} stores blocks of {KV_BLOCKS[value][1]} values, and this model's attention heads hold {sizes}"
        if option:
            raise InvalidRequest(f"options.kv_cache_type {value} does not fit this model: {why}; use f16", field=_FIELD)
        if (shape, value) not in _told:  # once per model shape, not per request
            _told.add((shape, value))
            log.warning("LOCALLLM_KV_CACHE_TYPE=%s does not fit a model (%s): its KV cache stays f16", value, why)
        return "f16"
    return value


_FIELD = "options.kv_cache_type"
_told: set[tuple[ModelShape, str]] = set()


def context_that_fits(
    weights: int,
    shape: ModelShape,
    *,
    n_parallel: int,
    memory: int,
    want: int,
    floor: int = 2048,
    kv_cache_type: str = "f16",
    projector: int = 0,
    n_batch: int = UBATCH_MAX,
    swa_full: bool = False,
    draft: DraftFile | None = None,
) -> int:
    """The largest context (per sequence, a multiple of 256, at most `want`) whose estimate fits in `memory`
    bytes; never below `floor` (or `want`, if smaller): a model that does not fit even then is refused by
    the scheduler with a message, not shrunk to nothing."""
    low = min(want, floor)
    n_ctx = want

    def total(n_ctx: int) -> int:
        return estimate(
            weights,
            shape,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            kv_cache_type=kv_cache_type,
            projector=projector,
            n_batch=n_batch,
            swa_full=swa_full,
            draft=draft,
        ).total

    while n_ctx > low and total(n_ctx) > memory:
        n_ctx = max(low, (n_ctx // 2) // 256 * 256)
    return n_ctx


# -- where a model goes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """How a model would be loaded: `gpu_layers` to offload (-1: leave it to llama.cpp), the bytes that
    would sit in RAM and in VRAM, and whether that fits in what is free."""

    gpu_layers: int
    ram: int
    vram: int
    fits: bool


def fit_layers(est: Estimate, usable_vram: int) -> int:
    """How many layers fit in `usable_vram` bytes; `est.layers + 1` when the whole model (output too) does."""
    if est.total <= usable_vram:
        return est.layers + 1
    fixed = est.compute + est.projector  # what any offload puts on the GPU, whatever the layers
    if usable_vram <= fixed or est.layers <= 0:
        return 0
    per_layer = est.layered / est.layers
    return max(0, min(est.layers, int((usable_vram - fixed) // per_layer)))


def place(est: Estimate, free: Memory, *, num_gpu: int, gpu_overhead: int = GPU_OVERHEAD) -> Placement:
    """Where a model goes given what is `free`: `num_gpu` layers when it is set (>= 0), else as many as fit
    in the free VRAM less `gpu_overhead`."""
    usable = max(0, free.vram_free - gpu_overhead) if free.has_gpu else 0
    if num_gpu >= 0:
        layers = num_gpu
        vram = est.on_gpu(num_gpu) if free.has_gpu else 0
    elif not free.has_gpu:
        layers, vram = -1, 0
    elif est.layers <= 0:  # layers unknown: all on the GPU if the whole model fits there, else none
        layers = -1 if est.total <= usable else 0
        vram = est.total if layers < 0 else 0
    else:
        layers = fit_layers(est, usable)
        vram = est.on_gpu(layers)
    ram = est.total - vram
    fits = ram <= free.ram_free and (vram == 0 or vram <= usable)
    return Placement(gpu_layers=layers, ram=ram, vram=vram, fits=fits)
