"""Ollama's answers as reply models (`server/replies.py`): what `/api/*` sends, line by line for a stream."""

from __future__ import annotations

from typing import Any

from ...replies import UNSET, AccessToken, OllamaError, Reply, TokenLogprob, Unset


class OllamaVersion(Reply, kw_only=True):
    version: str


class OllamaDetails(Reply, kw_only=True):
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str
    parent_model: str


class OllamaModelEntry(Reply, kw_only=True):
    """A stored model as `/api/tags` lists it; `damaged` (localllm's own) says why one cannot be read."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaDetails
    damaged: str | Unset = UNSET


class OllamaTags(Reply, kw_only=True):
    models: list[OllamaModelEntry]


class OllamaDevice(Reply, kw_only=True):
    """A device a model split across RPC workers has layers on (localllm's own, docs/workers.md)."""

    name: str
    where: str
    layers: int
    size: int
    free: int


class OllamaLoadedModel(Reply, kw_only=True):
    name: str
    model: str
    size: int
    digest: str
    details: OllamaDetails
    expires_at: str
    size_vram: int
    context_length: int
    kv_cache_type: str
    swa_full: bool | Unset = UNSET  # localllm's own: a sliding-window model with a full-size cache
    prompt_cache: dict[str, int | float] | Unset = UNSET  # localllm's own: the runner's prompt cache
    devices: list[OllamaDevice] | Unset = UNSET


class OllamaLoaded(Reply, kw_only=True):
    models: list[OllamaLoadedModel]


class OllamaShownMessage(Reply, kw_only=True):
    role: str
    content: str


class OllamaShow(Reply, kw_only=True):
    modelfile: str
    parameters: str
    template: str
    system: str
    details: OllamaDetails
    model_info: dict[str, Any]
    projector_info: dict[str, Any] | Unset = UNSET  # a model with a projector: its GGUF's metadata, as Ollama's
    capabilities: list[str]
    modified_at: str
    license: str | Unset = UNSET
    messages: list[OllamaShownMessage] | Unset = UNSET


class OllamaProgress(Reply, kw_only=True):
    """A line of a pull or a create (`stream: false`: the lines merged, the last status)."""

    status: str | Unset = UNSET  # absent only from the empty object of a stream that had no line
    digest: str | Unset = UNSET
    total: int | Unset = UNSET
    completed: int | Unset = UNSET


class OllamaVerifyLine(Reply, kw_only=True):
    """A line of `/api/verify`: a blob checked (`digest`, `size`, the `models` using it, the `problem` of a
    damaged one), or the last line (`checked`, `damaged`); `stream: false` answers the last with `blobs`."""

    status: str
    digest: str | Unset = UNSET
    size: int | Unset = UNSET
    models: list[str] | Unset = UNSET
    problem: str | Unset = UNSET
    checked: int | Unset = UNSET
    damaged: list[str] | Unset = UNSET
    blobs: list[OllamaVerifyLine] | Unset = UNSET


class OllamaToolFunction(Reply, kw_only=True):
    index: int
    name: str
    arguments: dict[str, Any]


class OllamaCall(Reply, kw_only=True):
    id: str
    function: OllamaToolFunction


class OllamaAssistantMessage(Reply, kw_only=True):
    role: str
    content: str
    thinking: str | Unset = UNSET
    tool_calls: list[OllamaCall] | Unset = UNSET


class _OllamaLine(Reply, kw_only=True):
    """A line of `/api/generate` (its `response`, `thinking` and `context`) or of `/api/chat` (its `message`),
    in Ollama's order; the counters come on the last line (`done`)."""

    model: str
    created_at: str
    response: str | Unset = UNSET  # generate's (required there)
    thinking: str | Unset = UNSET  # generate's reasoning (a chat's is in its message)
    message: OllamaAssistantMessage | Unset = UNSET  # chat's (required there)
    done: bool
    logprobs: list[TokenLogprob] | Unset = UNSET
    done_reason: str | Unset = UNSET
    total_duration: int | Unset = UNSET
    load_duration: int | Unset = UNSET
    prompt_eval_count: int | Unset = UNSET
    prompt_eval_duration: int | Unset = UNSET
    eval_count: int | Unset = UNSET
    eval_duration: int | Unset = UNSET
    truncated: int | Unset = UNSET  # input tokens dropped to fit the context (never silently)
    # localllm's own, beside eval_count: speculative decoding's drafted and kept tokens (docs/speculation.md)
    draft_count: int | Unset = UNSET
    draft_accepted_count: int | Unset = UNSET
    context: list[int] | Unset = UNSET  # generate's last line (not with `raw`)


class OllamaGenerateLine(_OllamaLine, kw_only=True):
    """`/api/generate`: a line of the stream, or the whole answer."""

    response: str


class OllamaChatLine(_OllamaLine, kw_only=True):
    """`/api/chat`: a line of the stream, or the whole answer."""

    message: OllamaAssistantMessage


class OllamaEmbed(Reply, kw_only=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class OllamaEmbedding(Reply, kw_only=True):
    embedding: list[float]


MODELS = (
    OllamaError,
    AccessToken,
    OllamaVersion,
    OllamaTags,
    OllamaLoaded,
    OllamaShow,
    OllamaProgress,
    OllamaVerifyLine,
    OllamaGenerateLine,
    OllamaChatLine,
    OllamaEmbed,
    OllamaEmbedding,
)
