"""OpenAI's Responses request bodies (`POST /v1/responses`, `POST /v1/responses/input_tokens`), declared once:
the parser, the checks and the OpenAPI schemas all come from these models (`server/wire.py`).

Unknown top-level fields are refused (`Strict`); fields that do not apply to a local server (`user`,
`metadata`, `prompt_cache_key`, `service_tier`, ...) are accepted, echoed or ignored. Input items are one
model whose `type` says which fields it uses (a message may come without a `type`, so they cannot be a tagged
union); their content parts are a tagged union on `type` (text parts, `input_image` and `input_audio`;
`input_file` is declared so that it is refused by name). `tools` stay JSON objects: they
are echoed back as sent, hosted tools included (`requests.function_tools` reads the function ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from msgspec import Meta

from ....domain.limits import MAX_MESSAGES, MAX_TOOLS, PROMPT_MAX_BYTES
from ...wire import Lenient, Strict, check_text
from ..openai.wire import AudioData


class InputText(Lenient, tag_field="type", tag="input_text"):
    text: str


class OutputText(Lenient, tag_field="type", tag="output_text"):
    text: str


class PlainText(Lenient, tag_field="type", tag="text"):
    text: str


class Refusal(Lenient, tag_field="type", tag="refusal"):
    refusal: str = ""
    text: str = ""


class SummaryText(Lenient, tag_field="type", tag="summary_text"):
    text: str


class ReasoningText(Lenient, tag_field="type", tag="reasoning_text"):
    text: str


class InputImage(Lenient, tag_field="type", tag="input_image"):
    image_url: str | None = None  # a data URL, or http(s) where LOCALLLM_ALLOW_IMAGE_URLS allows it
    file_id: str | None = None  # refused: there is no file store here
    detail: str | None = None  # "auto", "low", "high": accepted (the model's projector sets the resolution)


class InputFile(Lenient, tag_field="type", tag="input_file"):
    file_id: str | None = None
    file_data: str | None = None


class InputAudio(Lenient, tag_field="type", tag="input_audio"):
    input_audio: AudioData  # as on chat completions: {data: base64, format}


TextPart = InputText | OutputText | PlainText | Refusal | SummaryText | ReasoningText
Part = TextPart | InputImage | InputFile | InputAudio
Content = str | list[Part]


class InputItem(Lenient, kw_only=True):
    """A message (the default), a `function_call` and its `function_call_output`, a `reasoning` item (its
    `encrypted_content` and `summary` ignored), and the calls Codex replays: `local_shell_call` (its `action`)
    with `local_shell_call_output`, `custom_tool_call` (its `input`) with `custom_tool_call_output`. Other types
    (hosted tools' calls: `web_search_call`, ...) are refused by name (`requests.parse_input`)."""

    type: str = "message"
    role: Literal["user", "system", "developer", "assistant"] | None = None  # message: required
    content: Content | None = None  # message
    call_id: str | None = None  # the calls and their outputs: required
    id: str | None = None  # local_shell_call_output: the call it answers (when no call_id)
    name: str | None = None  # function_call, custom_tool_call: required
    arguments: str = "{}"  # function_call: a JSON object, as a string
    input: str | None = None  # custom_tool_call: its free-form input
    action: dict[str, Any] | None = None  # local_shell_call: {"type": "exec", "command": [...], ...}
    output: Content | None = None  # the outputs


class ResponsesJsonSchema(Lenient, tag_field="type", tag="json_schema"):
    schema: dict[str, Any]
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


class ResponsesJsonObject(Lenient, tag_field="type", tag="json_object"):
    pass


class ResponsesText(Lenient, tag_field="type", tag="text"):
    pass


class TextConfig(Lenient):
    format: ResponsesText | ResponsesJsonObject | ResponsesJsonSchema | None = None
    verbosity: str | None = None


class Reasoning(Lenient):
    effort: str | None = None  # chat.thinking.EFFORTS (`thinking.effort` says which is wrong)
    summary: Literal["auto", "concise", "detailed", "none"] | None = None  # accepted; no summaries are written


def _texts(content: Content | None) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [p.text for p in content if isinstance(p, (InputText, OutputText, PlainText, SummaryText, ReasoningText))]


def _item_texts(items: str | Sequence[InputItem]) -> list[str]:
    if isinstance(items, str):
        return [items]
    return [
        t for item in items for t in (*_texts(item.content), *_texts(item.output), item.arguments, item.input or "")
    ]


class InputTokensRequest(Strict, kw_only=True):
    """`POST /v1/responses/input_tokens`: the prompt of a request, counted."""

    model: str | None = None  # none (or InferenceClient's "dummy"): LOCALLLM_DEFAULT_MODEL
    input: str | Annotated[list[InputItem], Meta(max_length=MAX_MESSAGES)] | None = None  # required (a 400 says)
    instructions: str | None = None
    tools: Annotated[list[Any], Meta(max_length=MAX_TOOLS)] = []
    tool_choice: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    parallel_tool_calls: bool = True
    truncation: Literal["auto", "disabled"] = "disabled"

    def check(self) -> None:
        texts = [self.instructions or "", *_item_texts(self.input or "")]
        check_text(texts, PROMPT_MAX_BYTES, "input", "input items")


class ResponsesRequest(InputTokensRequest, kw_only=True):
    """`POST /v1/responses`."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    stream: bool = False
    store: bool = True
    metadata: dict[str, Any] | None = None
    user: str | None = None
    include: list[Any] = []
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    seed: int | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    max_tool_calls: Annotated[int, Meta(ge=1)] | None = None
    background: bool = False  # refused when true
    stream_options: dict[str, Any] | None = None


MODELS = (ResponsesRequest, InputTokensRequest)
