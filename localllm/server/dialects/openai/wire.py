"""OpenAI's request bodies (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`), declared once: the
parser, the checks and the OpenAPI schemas all come from these models (`server/wire.py`).

Unknown fields are ignored (`Lenient`): OpenAI's SDKs send fields that do not apply to a local server
(`user`, `store`, `metadata`, `service_tier`, `parallel_tool_calls`, ...). Besides OpenAI's own fields, the
sampling extras that llama.cpp's server and vLLM take at the top level, and Ollama's `options` object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from ....domain.limits import (
    MAX_CHOICES,
    MAX_EMBED_INPUTS,
    MAX_LOGIT_BIAS,
    MAX_MESSAGES,
    MAX_STOP,
    MAX_TOOLS,
    PROMPT_MAX_BYTES,
)
from ...schema import OPTIONS
from ...wire import Lenient, check_text

# -- content parts: a tagged union on `type` -----------------------------------------------------------------


class TextPart(Lenient, tag_field="type", tag="text"):
    text: str


class ImageURL(Lenient):
    url: str  # a data URL (data:image/png;base64,...), or http(s) where LOCALLLM_ALLOW_IMAGE_URLS allows it
    detail: str | None = None  # "auto", "low", "high": accepted (the model's projector sets the resolution)


class ImagePart(Lenient, tag_field="type", tag="image_url"):
    image_url: ImageURL | str  # the object, or (as some clients send it) the URL itself


class AudioData(Lenient):
    data: str  # the base64 file
    format: str = ""  # "wav", "mp3", "flac": the file's own header is what is read


class AudioPart(Lenient, tag_field="type", tag="input_audio"):
    input_audio: AudioData


ContentPart = TextPart | ImagePart | AudioPart
Content = str | list[ContentPart] | None


# -- messages ---------------------------------------------------------------------------------------------


class FunctionCall(Lenient):
    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string; some clients an object


class ToolCall(Lenient):
    function: FunctionCall
    id: str | None = None
    type: Literal["function"] = "function"


class Message(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content = None
    tool_calls: list[ToolCall] | None = None  # assistant: its earlier calls
    tool_call_id: str | None = None  # tool: the call it answers (required there)
    reasoning_content: str | None = None  # assistant: its earlier reasoning (llama-server, DeepSeek)


# -- tools --------------------------------------------------------------------------------------------------


class Function(Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(Lenient):
    function: Function
    type: Literal["function"] = "function"


class NamedFunction(Lenient):
    name: str


class NamedTool(Lenient):
    function: NamedFunction
    type: Literal["function"] = "function"


ToolChoice = Literal["none", "auto", "required"] | NamedTool
LegacyFunctionCall = Literal["none", "auto"] | NamedFunction


# -- response_format: a tagged union on `type` -------------------------------------------------------------


class TextFormat(Lenient, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(Lenient, tag_field="type", tag="json_object"):
    schema: dict[str, Any] | None = None  # llama-server's: the object constrained to this schema


class JsonSchemaSpec(Lenient):
    schema: dict[str, Any]
    name: str | None = None
    strict: bool | None = None


class JsonSchemaFormat(Lenient, tag_field="type", tag="json_schema"):
    json_schema: JsonSchemaSpec


class JsonValueFormat(Lenient, tag_field="type", tag="json"):
    """TGI's form (`huggingface_hub`'s `InferenceClient.chat_completion(response_format=...)`): the schema as
    `value`."""

    value: dict[str, Any]


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat | JsonValueFormat


# -- bodies -------------------------------------------------------------------------------------------------

Stop = str | Annotated[list[str], Meta(max_length=MAX_STOP)] | None
Unit = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
Budget = Annotated[int, Meta(ge=-1)] | None
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]  # chat.thinking.EFFORTS (a test holds them equal)
Options = Annotated[dict[str, Any], Meta(extra_json_schema=OPTIONS)] | None


class StreamOptions(Lenient):
    include_usage: bool = False


class Sampling(Lenient):
    """The fields both completion endpoints take: OpenAI's sampling fields and the llama.cpp/vLLM extras."""

    model: str | None = None  # none (or InferenceClient's "dummy"): LOCALLLM_DEFAULT_MODEL
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] = 1
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Meta(ge=-1, le=1 << 20)] | None = None
    min_p: Unit | None = None
    typical_p: Unit | None = None
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    repetition_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    mirostat: Annotated[int, Meta(ge=0, le=2)] | None = None
    mirostat_tau: Annotated[float, Meta(ge=0, le=100)] | None = None
    mirostat_eta: Annotated[float, Meta(ge=0, le=10)] | None = None
    min_tokens: Annotated[int, Meta(ge=0, le=1 << 20)] = 0
    seed: int | None = None
    stop: Stop = None
    logit_bias: Annotated[dict[str, Annotated[float, Meta(ge=-100, le=100)]], Meta(max_length=MAX_LOGIT_BIAS)] = {}
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None  # llama-server's: the output constrained to this JSON schema
    ignore_eos: bool = False
    options: Options = None  # Ollama's options, under the fields above


def _texts(content: Content) -> list[str]:
    if content is None:
        return []
    return [content] if isinstance(content, str) else [part.text for part in content if isinstance(part, TextPart)]


class ChatCompletionRequest(Sampling, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)]
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolSpec], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    functions: Annotated[list[Function], Meta(max_length=MAX_TOOLS)] | None = None  # the legacy `tools`
    function_call: LegacyFunctionCall | None = None  # the legacy `tool_choice`
    reasoning_effort: Effort | None = None
    # a thinking budget in tokens, under llama-server's names and vLLM's; -1 (or none): no budget
    reasoning_budget_tokens: Budget = None
    thinking_budget_tokens: Budget = None
    thinking_token_budget: Budget = None

    def check(self) -> None:
        check_text((t for m in self.messages for t in _texts(m.content)), PROMPT_MAX_BYTES, "messages", "messages")


class CompletionRequest(Sampling, kw_only=True):
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=MAX_CHOICES)]
    suffix: str | None = None
    echo: bool = False
    best_of: Annotated[int, Meta(ge=1, le=20)] | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None

    def check(self) -> None:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        check_text(prompts, PROMPT_MAX_BYTES, "prompt", "prompts")


class EmbeddingRequest(Lenient, kw_only=True):
    # a string, a list of strings, an array of token ids or a list of such arrays (checked by `embed.inputs`)
    input: str | Annotated[list[Any], Meta(max_length=MAX_EMBED_INPUTS)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None

    def check(self) -> None:
        texts = [self.input] if isinstance(self.input, str) else [t for t in self.input if isinstance(t, str)]
        check_text(texts, PROMPT_MAX_BYTES, "input", "inputs")


MODELS = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)
