"""Create a model (`POST /api/create`): a base (an existing model, one pulled from the Hub, or uploaded GGUF
blobs) with a template, system text, parameters, messages and license of its own.

Among the uploaded `files`, a multimodal projector (a GGUF whose `general.type` is `mmproj`/`projector` or whose
architecture is `clip`, as Ollama tells them apart) becomes the model's projector layer; it may come with
`from` (a vision model built on a text model, or another projector for a model that has one), and a model
built `from` another keeps that model's projector unless `files` gives one.

Each new layer is a blob (JSON or text) in the store; the manifest is written last, so a failed create leaves
no model behind. Progress follows Ollama's statuses: `using existing layer sha256:…`, `creating new layer
sha256:…`, `writing manifest`, `success`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from ..chat.renderpool import TemplateSource
from ..domain import limits
from ..domain.errors import InvalidRequest, ModelNotFound
from ..domain.events import Progress
from ..domain.messages import ChatMessage
from ..domain.names import ModelName, parse_name
from ..domain.options import Options, parse_options
from ..modelstore import library
from ..modelstore.gguf import read_info
from ..modelstore.store import (
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    check_digest,
)
from .core import Service


@dataclass(frozen=True)
class CreateRequest:
    model: ModelName
    from_: str | None = None  # an existing model, or hf.co/... (pulled when missing)
    files: dict[str, str] = field(default_factory=dict)  # GGUF file name -> digest of an uploaded blob
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: Options | None = None
    messages: tuple[ChatMessage, ...] | None = None
    license: tuple[str, ...] | None = None


async def create(service: Service, req: CreateRequest) -> AsyncGenerator[Progress, None]:
    """Build the model's manifest from its base and its own layers, yielding progress."""
    store = service.store
    check_bounds(req)
    if req.template is not None:  # untrusted code: compiled and tried by a bounded render worker
        await service.templates.check_template(req.template, TemplateSource("the template", "template"))
    models, projector = _uploaded(service, req.files)
    if models and req.from_:
        raise InvalidRequest(
            "give either from or the model's GGUF in files, not both (files may add a projector to from)",
            field="files",
        )
    params, system, template_text = Options(), None, None
    adapters: tuple[Layer, ...] = ()
    messages: tuple[ChatMessage, ...] = ()
    license_: tuple[str, ...] = ()
    if models:
        base = models
    elif req.from_:
        name = parse_name(req.from_, field="from")
        if store.find(name) is None:
            if not name.is_hf and library.find(name) is None:
                raise ModelNotFound(
                    f"model '{req.from_}' not found: pull it first, or give a hf.co/… name or a library name"
                )
            async for step in pull(service, name):  # from the Hub, or the library's model
                if step.status != "success":
                    yield step
        source = service.model(name)
        base = source.stored.manifest.model_layers
        params, system, messages, license_ = source.parameters, source.system, source.messages, source.license
        adapters = tuple(layer for layer in source.stored.manifest.layers if layer.media_type == MEDIA_ADAPTER)
        # The base's own TEMPLATE layer carries over; a template from the GGUF itself stays in the GGUF.
        template_text = store.read_blob_text(source.stored.manifest.layer(MEDIA_TEMPLATE))
        projector = projector or source.stored.manifest.projector
    elif req.files:
        raise InvalidRequest(
            "files holds only a projector: give the model's GGUF in files too, or the model to build on as from",
            field="files",
        )
    else:
        raise InvalidRequest("from or files is required: the model to build on", field="from")

    layers: list[Layer] = []
    for layer in base:
        yield Progress(f"using existing layer {layer.digest}")
        layers.append(layer)
    for layer in adapters if not req.adapters else _adapters(service, req.adapters):
        yield Progress(f"using existing layer {layer.digest}")
        layers.append(layer)
    if projector is not None:
        yield Progress(f"using existing layer {projector.digest}")
        layers.append(projector)

    own = [
        (req.template if req.template is not None else template_text, MEDIA_TEMPLATE),
        (req.system if req.system is not None else system, MEDIA_SYSTEM),
        (_params_json(req.parameters.merged_over(params) if req.parameters else params), MEDIA_PARAMS),
        (_messages_json(req.messages if req.messages is not None else messages), MEDIA_MESSAGES),
        ("\n\n".join(req.license if req.license is not None else license_) or None, MEDIA_LICENSE),
    ]
    with store.adding():  # no other process prunes the new blobs before the manifest names them
        for text, media in own:
            if not text:
                continue
            data = text.encode("utf-8")
            existed = store.has_blob(f"sha256:{hashlib.sha256(data).hexdigest()}")
            layer = store.add_blob_bytes(data, media)
            yield Progress(f"{'using existing' if existed else 'creating new'} layer {layer.digest}")
            layers.append(layer)
        if req.template is None and template_text is None:  # the GGUF's own chat template is the model's
            await service.templates.check_gguf_template(
                store.blob_path(base[0].digest), f"the chat template in the GGUF of {req.model}"
            )
        yield Progress("writing manifest")
        store.write_manifest(req.model, Manifest(tuple(layers)))
    yield Progress("success")


async def pull(service: Service, name: ModelName) -> AsyncGenerator[Progress, None]:
    """Pull `name`: a `hf.co/…` name from the Hub, or a short name of the model library (`qwen2.5:0.5b`),
    whose Modelfile's FROM is pulled and the model created from it with the library's parameters."""
    if name.is_hf:
        async for step in service.pull(name):
            yield step
        return
    entry = library.find(name)
    if entry is None:
        raise ModelNotFound(
            f"model '{name}' not found: it is not in the library (localllm list --library) and only "
            "hf.co/<user>/<repo>[:<quant>] names can be pulled from the Hub"
        )
    request = CreateRequest(
        model=name,
        from_=entry.from_,
        template=entry.template,
        system=entry.system,
        parameters=parse_options(entry.parameters, field="parameters") if entry.parameters else None,
        messages=entry.messages or None,
        license=entry.license or None,
    )
    async for step in create(service, request):
        yield step


def check_bounds(req: CreateRequest) -> None:
    """The bounds every request using the model would meet (`limits`), met by what the model keeps: a model
    with 100 stop sequences, or more messages than a request may send, could never be used (each request a
    400), or would make every chat render and evaluate them all."""
    if req.parameters is not None:
        limits.check_stop(req.parameters.stop, "parameters.stop")
    if req.messages is not None:
        limits.check_count(req.messages, limits.MAX_MESSAGES, "messages", "messages")
        text = sum(limits.utf8_len(m.content) for m in req.messages)
        if text > limits.PROMPT_MAX_BYTES:
            raise InvalidRequest(
                f"messages: their text is {text} bytes, more than the {limits.size_text(limits.PROMPT_MAX_BYTES)} "
                "a prompt may have",
                field="messages",
            )
    if req.system is not None:
        limits.check_bytes(req.system, limits.PROMPT_MAX_BYTES, "system", "system prompt")


def _uploaded(service: Service, files: dict[str, str]) -> tuple[tuple[Layer, ...], Layer | None]:
    """The GGUF blobs named by `files`, each checked to be present and a readable GGUF: the model's (split
    shards in order by name) and the projector's, told apart by their metadata (`GGUFInfo.is_projector`)."""
    store = service.store
    models, projectors = [], []
    for filename in sorted(files):
        where = f"files.{filename}"
        digest = check_digest(files[filename], field=where)
        if not store.has_blob(digest):
            raise InvalidRequest(
                f"{where}: blob {digest} is not on the server; upload it with POST /api/blobs/{digest}", field=where
            )
        path = store.blob_path(digest)
        try:
            info = read_info(path)
        except Exception as exc:  # the gguf reader raises ValueError, KeyError, IndexError ... on a bad file
            raise InvalidRequest(f"{where} is not a valid GGUF file: {exc}", field=where) from None
        if info.is_projector:
            projectors.append((filename, Layer(MEDIA_PROJECTOR, digest, path.stat().st_size)))
        else:
            models.append(Layer(MEDIA_MODEL, digest, path.stat().st_size))
    if len(projectors) > 1:
        names = ", ".join(name for name, _ in projectors)
        raise InvalidRequest(f"files holds {len(projectors)} projectors ({names}): a model takes one", field="files")
    return tuple(models), projectors[0][1] if projectors else None


def _adapters(service: Service, files: dict[str, str]) -> tuple[Layer, ...]:
    """The LoRA adapter blobs named by `adapters`, each present and a GGUF of type adapter."""
    store = service.store
    layers = []
    for filename, raw in sorted(files.items()):
        where = f"adapters.{filename}"
        digest = check_digest(raw, field=where)
        if not store.has_blob(digest):
            raise InvalidRequest(
                f"{where}: blob {digest} is not on the server; upload it with POST /api/blobs/{digest}", field=where
            )
        path = store.blob_path(digest)
        try:
            kind = read_info(path).metadata.get("general.type")
        except Exception as exc:  # the gguf reader raises ValueError, KeyError, IndexError ... on a bad file
            raise InvalidRequest(f"{where} is not a valid GGUF file: {exc}", field=where) from None
        if kind != "adapter":
            raise InvalidRequest(f"{where} is not a LoRA adapter GGUF (general.type is {kind!r})", field=where)
        layers.append(Layer(MEDIA_ADAPTER, digest, path.stat().st_size))
    return tuple(layers)


def _params_json(options: Options) -> str | None:
    values = options.as_dict()
    return json.dumps(values, sort_keys=True) if values else None


def _messages_json(messages: Sequence[ChatMessage] | None) -> str | None:
    if not messages:
        return None
    return json.dumps([{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False)
