"""A stored model as the service sees it: its manifest's layers (template, system prompt, parameters,
messages, license, adapters, projector) read from the store, with what its GGUF metadata (and its projector's)
says (`Model`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..chat import prompt, templatecaps
from ..domain.errors import EngineError
from ..domain.messages import ChatMessage
from ..domain.modelinfo import ModelDetails
from ..domain.names import ModelName
from ..domain.options import Options, parse_options
from .gguf import GGUFInfo, read_info
from .store import MEDIA_LICENSE, MEDIA_MESSAGES, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE, Store, StoredModel

POOLING_RANK = 4  # `<arch>.pooling_type` of a reranker (llama.cpp's LLAMA_POOLING_TYPE_RANK)


@dataclass(frozen=True)
class Model:
    """A stored model with what its layers and GGUF metadata say."""

    stored: StoredModel
    path: Path
    info: GGUFInfo
    template: str | None
    system: str | None
    parameters: Options
    messages: tuple[ChatMessage, ...] = ()  # a conversation every chat starts from (Modelfile MESSAGE)
    license: tuple[str, ...] = ()
    template_source: str = "the model's chat template"  # what an error about the template calls it
    own_template: bool = False  # the template is the Modelfile's (it wins over the GGUF's named variants)
    projector: Path | None = None  # the multimodal projector GGUF (mmproj) loaded beside the model
    projector_info: GGUFInfo | None = None  # its metadata: what it encodes (`GGUFInfo.media`)

    def template_for(self, *, tools: bool) -> tuple[str | None, str]:
        """The template for a request, and what an error calls it: the GGUF's `tool_use` variant when the
        request has tools (unless the Modelfile sets a TEMPLATE), else the model's own."""
        variant = self.info.chat_templates.get("tool_use")
        if tools and variant and not self.own_template:
            return variant, f"the tool_use chat template in the GGUF of '{self.name}'"
        return self.template, self.template_source

    @property
    def name(self) -> str:
        return str(self.stored.name)

    @property
    def details(self) -> ModelDetails:
        return ModelDetails(
            format="gguf",
            family=self.info.architecture,
            # a projector adds its architecture (`clip`), as Ollama lists a vision model's families
            families=(self.info.architecture,)
            + ((self.projector_info.architecture,) if self.projector_info is not None else ()),
            parameter_size=self.info.parameter_size,
            quantization_level=self.info.quantization,
        )

    @property
    def input_modalities(self) -> tuple[str, ...]:
        """What a request may send the model: text, and images or audio when its projector encodes them."""
        media = self.projector_info.media if self.projector_info is not None else ()
        return ("text", *(("image",) if "vision" in media else ()), *(("audio",) if "audio" in media else ()))

    @property
    def capabilities(self) -> list[str]:
        if self.info.metadata.get(f"{self.info.architecture}.pooling_type") == POOLING_RANK:
            return ["rerank"]  # a cross-encoder: its pooled output is a score, not an embedding
        if self.info.pooling or self.info.architecture in {"bert", "nomic-bert", "jina-bert-v2"}:
            return ["embedding"]
        template = self.template or ""
        tools = prompt.supports_tools(template) or "tool_use" in self.info.chat_templates
        thinks = templatecaps.thinking(template)
        return [
            "completion",
            *(["tools"] if tools else []),
            *(["insert"] if self.info.fim else []),
            *(self.projector_info.media if self.projector_info is not None else ()),  # vision, audio
            *(["thinking"] if thinks else []),
        ]


@dataclass(frozen=True)
class DamagedModel:
    """A stored model that cannot be read: a blob is missing (`localllm verify` moved it aside, say) or its
    GGUF does not parse. Listed, flagged, never served."""

    stored: StoredModel
    problem: str

    @property
    def name(self) -> str:
        return str(self.stored.name)


def diagnose(store: Store, stored: StoredModel, exc: BaseException) -> str:
    """What is wrong with a stored model that `read_model` could not read, naming the blob."""
    for layer in stored.manifest.layers:
        if not store.has_blob(layer.digest):
            blob = store.blob_path(layer.digest)
            aside = blob.with_name(blob.name + ".damaged")
            why = f"failed its sha256 check and was moved aside to {aside.name}" if aside.exists() else "is missing"
            return f"its blob {blob.name} {why}; pull the model again or delete it"
    return f"{exc}; pull the model again or delete it"


def read_model(store: Store, name: ModelName) -> Model:
    """The stored model of that name; `ModelNotFound` when there is none (never a fallback)."""
    stored = store.get(name)
    path = store.model_path(stored.manifest)
    params_layer = stored.manifest.layer(MEDIA_PARAMS)
    params = Options()
    if params_layer is not None:
        params = parse_options(json.loads(store.read_blob_text(params_layer) or "{}"), field="parameters")
    try:
        info = read_info(path)
    except Exception as exc:  # the gguf reader raises plain ValueErrors, KeyErrors, ... on a bad file
        raise EngineError(f"cannot read the model file of '{stored.name}' ({path.resolve().name}): {exc}") from exc
    projector = store.projector_path(stored.manifest)
    projector_info = None
    if projector is not None:
        try:
            projector_info = read_info(projector)
        except Exception as exc:  # as above
            raise EngineError(f"cannot read the projector file of '{stored.name}' ({projector.name}): {exc}") from exc
    own = store.read_blob_text(stored.manifest.layer(MEDIA_TEMPLATE))
    template = own or info.chat_template
    messages = json.loads(store.read_blob_text(stored.manifest.layer(MEDIA_MESSAGES)) or "[]")
    license_ = store.read_blob_text(stored.manifest.layer(MEDIA_LICENSE))
    return Model(
        stored,
        path,
        info,
        template,
        store.read_blob_text(stored.manifest.layer(MEDIA_SYSTEM)),
        params,
        tuple(ChatMessage(str(m["role"]), str(m["content"])) for m in messages),
        (license_,) if license_ else (),
        f"the Modelfile TEMPLATE of '{stored.name}'" if own else f"the chat template in the GGUF of '{stored.name}'",
        own_template=bool(own),
        projector=projector,
        projector_info=projector_info,
    )
