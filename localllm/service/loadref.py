"""How a model loads: its load spec for the options a request (or its Modelfile) sets, and the RPC workers it
may be split across. Pure: the service caches what this returns, by the options that shape it
(`runner.protocol.LOAD_OPTIONS`)."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from ..config.values import parse_rpc_servers
from ..domain.errors import ConfigError, EngineError, InvalidRequest
from ..domain.options import Options
from ..modelstore.gguf import read_info
from ..modelstore.models import Model
from ..modelstore.store import MEDIA_ADAPTER, MEDIA_DRAFT, Store
from ..observability.machine import Memory
from ..runner.protocol import LoadSpec
from ..scheduling.memory import DraftFile, ModelShape, context_that_fits, kv_cache_type_for
from ..scheduling.refs import ModelRef


def model_ref(
    model: Model, options: Options, settings: Settings, store: Store, machine: Callable[[], Memory]
) -> ModelRef:
    """How `model` loads with these options: its load spec (the context fitted to the machine's memory when
    no `num_ctx` is asked for, the KV cache type, its adapters, projector and RPC workers) and what the scheduler
    needs (the projector's bytes apart from the weights: it is not split by layer; the draft model's, whose
    KV cache is counted too)."""
    trained = model.info.context_length or settings.context_length
    embedding = "embedding" in model.capabilities or "rerank" in model.capabilities  # pooled outputs
    n_parallel = 1 if embedding else settings.num_parallel
    n_ctx = options.num_ctx or min(settings.context_length, trained)
    shape = ModelShape.from_metadata(model.info.metadata, model.info.architecture)
    manifest = model.stored.manifest
    projector = manifest.projector.size if manifest.projector is not None else 0
    draft_layer = manifest.layer(MEDIA_DRAFT)
    draft = _draft(model, store, draft_layer.digest, draft_layer.size) if draft_layer is not None else None
    # the projector and the draft model are estimated on their own (the projector is not split by layer)
    weights = manifest.size - projector - (draft.size if draft is not None else 0)
    kv_cache_type = kv_cache_type_for(settings, options.kv_cache_type, shape, embedding=embedding)
    # (a model without sliding-window layers loads as it would without: one runner, one layout key)
    swa_full = shape.sliding_window > 0 and (settings.swa_full if options.swa_full is None else options.swa_full)
    n_batch = options.num_batch or LoadSpec.n_batch
    if not options.num_ctx:  # the default window also fits the machine's memory (RAM and VRAM together)
        memory = machine()
        n_ctx = context_that_fits(
            weights,
            shape,
            n_parallel=n_parallel,
            memory=int((memory.ram_total + memory.vram_total) * 0.9),
            want=n_ctx,
            kv_cache_type=kv_cache_type,
            projector=projector,
            n_batch=n_batch,
            swa_full=swa_full,
            draft=draft,
        )
    if embedding:  # one sequence (as Ollama), never past the trained positions (BERT has no more)
        n_ctx = min(n_ctx, trained)
    workers = rpc_servers(settings, options)
    spec = LoadSpec(  # what is not set in the options keeps LoadSpec's default
        model_path=str(model.path),
        n_ctx=n_ctx,
        num_gpu=options.num_gpu if options.num_gpu is not None else LoadSpec.num_gpu,
        main_gpu=main_gpu(options.main_gpu, machine, workers),
        n_threads=options.num_thread or settings.num_threads,
        n_batch=n_batch,
        use_mmap=options.use_mmap if options.use_mmap is not None else LoadSpec.use_mmap,
        n_parallel=n_parallel,
        embedding=embedding,
        stream_interval=settings.stream_interval,
        flash_attention=settings.flash_attention,
        kv_cache_type=kv_cache_type,
        swa_full=swa_full,
        cache_ram=settings.cache_ram,
        cache_dir=str(settings.cache_dir or ""),
        cache_disk=settings.cache_disk,
        lora=tuple(
            str(store.blob_path(layer.digest))
            for layer in model.stored.manifest.layers
            if layer.media_type == MEDIA_ADAPTER
        ),
        rpc_servers=workers,
        projector=str(model.projector) if model.projector is not None else LoadSpec.projector,
        draft=str(store.blob_path(draft_layer.digest)) if draft_layer is not None else "",
    )
    return ModelRef(model.name, manifest.digest, spec, weights, model.details, shape, projector=projector, draft=draft)


def _draft(model: Model, store: Store, digest: str, size: int) -> DraftFile:
    """The draft model's bytes and geometry, from its GGUF's metadata."""
    path = store.blob_path(digest)
    try:
        info = read_info(path)
    except Exception as exc:  # the gguf reader raises plain ValueErrors, KeyErrors, ... on a bad file
        raise EngineError(f"cannot read the draft model file of '{model.name}' ({path.name}): {exc}") from exc
    return DraftFile(size, ModelShape.from_metadata(info.metadata, info.architecture))


def main_gpu(asked: int | None, machine: Callable[[], Memory], workers: tuple[str, ...]) -> int:
    """The GPU a model loads on whole for the `main_gpu` option (CUDA's index, as Ollama and llama-server's
    `--main-gpu` take it), or -1: its layers spread over every GPU, llama.cpp's default. The option only
    chooses where there is a choice: on a machine without a GPU it is ignored (as Ollama does), with one GPU
    the model goes there anyway, and a model split across RPC workers spreads over them. An index past the
    GPUs here is refused, naming them."""
    if asked is None or workers:
        return LoadSpec.main_gpu
    gpus = len(machine().gpus)
    if gpus and asked >= gpus:
        which = "index 0" if gpus == 1 else f"0 to {gpus - 1}"
        raise InvalidRequest(
            f"options.main_gpu is {asked}, but this machine has {gpus} GPU{'s' if gpus > 1 else ''} ({which})",
            field="options.main_gpu",
        )
    return asked if gpus > 1 else LoadSpec.main_gpu


def rpc_servers(settings: Settings, options: Options) -> tuple[str, ...]:
    """The RPC workers a model is split across: LOCALLLM_RPC_SERVERS, or those of them its `rpc_servers`
    option (a Modelfile PARAMETER or a request's option) names; "none" for none. Only workers the
    operator listed may be named: an API client must not send a model's weights to a host of its choice."""
    allowed = settings.rpc_servers
    if options.rpc_servers is None:
        return allowed
    name = "options.rpc_servers"
    try:
        chosen = parse_rpc_servers(options.rpc_servers, name=name)
    except ConfigError as exc:
        raise InvalidRequest(str(exc), field=name) from None
    for endpoint in chosen:
        if endpoint not in allowed:
            listed = ",".join(allowed) or "none"
            raise InvalidRequest(
                f"{name}: {endpoint} is not one of the daemon's RPC workers (LOCALLLM_RPC_SERVERS={listed})",
                field=name,
            )
    return chosen
