"""How a runner loads its model (`LoadSpec`, the runner's one argument); its defaults are the daemon's load
options, written here and nowhere else."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from ..domain.limits import PROMPT_CACHE_DISK
from ..domain.options import CACHE_RAM_AUTO, FLASH_ATTENTION_MODES, KV_CACHE_TYPES, STREAM_INTERVAL, THREADS_AUTO
from .wire import Message, ProtocolError, decode_line


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model; equal specs can share a runner."""

    model_path: str
    n_ctx: int  # per sequence: the context is n_ctx * n_parallel tokens
    num_gpu: int = -1  # layers on the GPU; -1: every layer when llama.cpp can offload, else none
    main_gpu: int = -1  # the one GPU (CUDA's index) the model loads on, whole; -1: layers over every GPU
    n_threads: int = THREADS_AUTO  # llama.cpp's choice (LOCALLLM_NUM_THREADS, a model's num_thread)
    n_batch: int = 512
    use_mmap: bool = True
    n_parallel: int = 1  # sequence slots decoded together
    embedding: bool = False  # an embedding model: one sequence, pooled outputs, answers `Embed` only
    lora: tuple[str, ...] = ()  # LoRA adapter GGUFs applied (scale 1) on top of the model (Modelfile ADAPTER)
    stream_interval: float = STREAM_INTERVAL  # seconds between a stream's text messages (LOCALLLM_STREAM_INTERVAL)
    flash_attention: str = FLASH_ATTENTION_MODES[
        0
    ]  # "auto" (llama.cpp's choice), "on" or "off" (LOCALLLM_FLASH_ATTENTION)
    kv_cache_type: str = KV_CACHE_TYPES[
        0
    ]  # K and V elements: "f16", "q8_0" or "q4_0" (the quantised ones need flash attention)
    swa_full: bool = False  # a sliding-window model's window layers keep every position (LOCALLLM_SWA_FULL)
    # the prompt cache's saved KV states (runner/kvstates.py)
    cache_ram: int = CACHE_RAM_AUTO  # bytes in RAM; CACHE_RAM_AUTO: limits.prompt_cache_ram of the RAM free; 0: none
    cache_dir: str = ""  # the disk tier's directory; "": no disk tier (LOCALLLM_CACHE_DIR)
    cache_disk: int = PROMPT_CACHE_DISK  # the disk tier's bound in bytes (LOCALLLM_CACHE_DISK)
    rpc_servers: tuple[str, ...] = ()  # llama.cpp RPC workers (host:port) the layers are split across
    projector: str = ""  # a multimodal projector GGUF (mmproj) loaded beside the model with mtmd; "": none
    draft: str = ""  # a draft model's GGUF (Modelfile DRAFT), loaded beside the model to speculate; "": none

    def to_message(self) -> Message:
        message = {f.name: getattr(self, f.name) for f in fields(self)}
        message["lora"] = list(self.lora)
        message["rpc_servers"] = list(self.rpc_servers)
        return message

    @classmethod
    def from_message(cls, message: Message) -> LoadSpec:
        try:
            return cls(
                model_path=str(message["model_path"]),
                n_ctx=int(message["n_ctx"]),
                num_gpu=int(message.get("num_gpu", cls.num_gpu)),
                main_gpu=int(message.get("main_gpu", cls.main_gpu)),
                n_threads=int(message.get("n_threads", cls.n_threads)),
                n_batch=int(message.get("n_batch", cls.n_batch)),
                use_mmap=bool(message.get("use_mmap", cls.use_mmap)),
                n_parallel=int(message.get("n_parallel", cls.n_parallel)),
                embedding=bool(message.get("embedding", cls.embedding)),
                lora=tuple(str(p) for p in message.get("lora", ())),
                stream_interval=float(message.get("stream_interval", cls.stream_interval)),
                flash_attention=str(message.get("flash_attention", cls.flash_attention)),
                kv_cache_type=str(message.get("kv_cache_type", cls.kv_cache_type)),
                swa_full=bool(message.get("swa_full", cls.swa_full)),
                cache_ram=int(message.get("cache_ram", cls.cache_ram)),
                cache_dir=str(message.get("cache_dir", cls.cache_dir)),
                cache_disk=int(message.get("cache_disk", cls.cache_disk)),
                rpc_servers=tuple(str(p) for p in message.get("rpc_servers", ())),
                projector=str(message.get("projector", cls.projector)),
                draft=str(message.get("draft", cls.draft)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad load spec: {exc}") from exc

    def to_argument(self) -> str:
        return json.dumps(self.to_message(), separators=(",", ":"))

    @classmethod
    def from_argument(cls, argument: str) -> LoadSpec:
        return cls.from_message(decode_line(argument))
