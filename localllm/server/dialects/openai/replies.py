"""OpenAI's answers as reply models (`server/replies.py`): chat and text completions, whole and as stream
chunks (`api.py` builds these), the models and the embeddings."""

from __future__ import annotations

from typing import Literal

from ...replies import UNSET, OpenAIError, Reply, TokenLogprob, Unset


class OpenAIFunction(Reply, kw_only=True):
    name: str
    arguments: str  # the arguments as a JSON text


class OpenAIToolCall(Reply, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: OpenAIFunction


class OpenAIFunctionDelta(Reply, kw_only=True):
    name: str | Unset = UNSET  # on a call's first delta
    arguments: str


class OpenAIToolCallDelta(Reply, kw_only=True):
    """A streamed call: its first delta has its id, type and name, the others a piece of its arguments; a
    call sent whole in one delta has all of them."""

    index: int
    id: str | Unset = UNSET
    type: Literal["function"] | Unset = UNSET
    function: OpenAIFunctionDelta


class ChatLogprobs(Reply, kw_only=True):
    content: list[TokenLogprob]
    refusal: None = None


class LegacyLogprobs(Reply, kw_only=True):
    """A text completion's log-probabilities (the legacy shape): per token, its text, log-probability, the
    most likely alternatives and where it begins in the text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class AssistantMessage(Reply, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None  # None: only calls, no text
    refusal: None = None
    reasoning_content: str | Unset = UNSET
    tool_calls: list[OpenAIToolCall] | Unset = UNSET


class ChatChoice(Reply, kw_only=True):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str


class TextChoice(Reply, kw_only=True):
    index: int
    text: str
    logprobs: LegacyLogprobs | None
    finish_reason: str | None  # None while a stream's choice goes on


class PromptTokensDetails(Reply, kw_only=True):
    cached_tokens: int


class Usage(Reply, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ChatCompletion(Reply, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class TextCompletion(Reply, kw_only=True):
    """A text completion, whole (with `usage`) or one chunk of its stream (`usage` absent, or null until the
    last chunk with `stream_options.include_usage`)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: Usage | None | Unset = UNSET


class Delta(Reply, kw_only=True):
    """What a chunk adds to a choice's message (nothing, on the last)."""

    role: Literal["assistant"] | Unset = UNSET
    content: str | Unset = UNSET
    reasoning_content: str | Unset = UNSET
    tool_calls: list[OpenAIToolCallDelta] | Unset = UNSET


class ChunkChoice(Reply, kw_only=True):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(Reply, kw_only=True):
    """One event of a chat completion's stream; `usage` is absent, or null until the last chunk (no choices)
    with `stream_options.include_usage`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None | Unset = UNSET


class ModelObject(Reply, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # localllm's: `text`, and `image` / `audio` for a model whose projector encodes them (docs/multimodal.md);
    # absent for a damaged model, whose files cannot be read
    input_modalities: list[str] | Unset = UNSET


class ModelList(Reply, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class EmbeddingObject(Reply, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # the vector, or its little-endian float32 bytes base64-encoded


class EmbeddingUsage(Reply, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Reply, kw_only=True):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage


MODELS = (OpenAIError, ChatCompletion, ChatCompletionChunk, TextCompletion, ModelList, EmbeddingList)
