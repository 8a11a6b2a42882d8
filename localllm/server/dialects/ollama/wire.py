"""Ollama's request bodies (`/api/*`), declared once: the parser, the checks and the OpenAPI schemas all come
from these models (`server/wire.py`).

Unknown top-level fields are ignored, as Ollama does (`Lenient`); `options` keeps its own rule (an unknown
option is refused, a deprecated one reported: `server.wire.read_options`, the one reader of Ollama's options,
which OpenAI's routes take too).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, field

from ....chat.thinking import LEVELS
from ....domain.limits import MAX_EMBED_INPUTS, MAX_MESSAGES, MAX_TOOLS, PROMPT_MAX_BYTES
from ....domain.limits import MEDIA_MAX_ITEMS as MAX_MEDIA_ITEMS
from ...schema import OPTIONS
from ...wire import Lenient, check_text
from ..openai.wire import ToolSpec

Options = Annotated[dict[str, Any], Meta(extra_json_schema=OPTIONS)] | None
KeepAlive = str | float | None  # a duration ("5m", "1h30m") or seconds; negative: forever
# true, false, or a level for models that take one (`requests.parse_think` says which is wrong)
Think = bool | Annotated[str, Meta(extra_json_schema={"enum": list(LEVELS)})] | None
Images = Annotated[list[str], Meta(max_length=MAX_MEDIA_ITEMS)] | None  # each a base64 image file
Format = Literal["json", ""] | dict[str, Any] | None  # "json", or a JSON schema the output must validate against


class Named(Lenient, kw_only=True):
    """A body naming a model as `model` (or `name`, Ollama's older field)."""

    model: str | None = None
    name: str | None = None


class OllamaFunctionCall(Lenient):
    name: str
    arguments: dict[str, Any] | None = None


class OllamaToolCall(Lenient):
    function: OllamaFunctionCall
    id: str | None = None


class OllamaMessage(Lenient):
    role: str  # one of types.ROLES, in any case (`requests.messages` says)
    content: str = ""
    images: Images = None  # base64 files, before the text (`domain.parts`)
    tool_calls: list[OllamaToolCall] | None = None  # assistant: its earlier calls, arguments as an object
    tool_call_id: str | None = None
    thinking: str | None = None  # assistant: its earlier reasoning


class Generation(Lenient, kw_only=True):
    """What generate and chat share."""

    model: str | None = None
    options: Options = None
    keep_alive: KeepAlive = None
    stream: bool = True
    format: Format = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    think: Think = None
    truncate: bool = True  # cut an over-long input (and say so); false refuses it
    shift: bool | None = None  # accepted (Ollama's context shifting)


class GenerateBody(Generation, kw_only=True):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None  # an earlier exchange's token ids
    raw: bool = False
    images: Images = None  # base64 files, before the prompt (`domain.parts`)

    def check(self) -> None:
        check_text((self.prompt, self.system or "", self.suffix or ""), PROMPT_MAX_BYTES, "prompt", "prompt")


class ChatBody(Generation, kw_only=True):
    messages: Annotated[list[OllamaMessage], Meta(max_length=MAX_MESSAGES)] = []
    tools: Annotated[list[ToolSpec], Meta(max_length=MAX_TOOLS)] | None = None
    images: list[Any] | None = None  # refused: Ollama's chat takes images on its messages

    def check(self) -> None:
        check_text((m.content for m in self.messages), PROMPT_MAX_BYTES, "messages", "messages")


class EmbedBody(Lenient, kw_only=True):
    model: str | None = None
    input: str | Annotated[list[str], Meta(max_length=MAX_EMBED_INPUTS)] | None = None
    truncate: bool = True
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    options: Options = None
    keep_alive: KeepAlive = None

    def check(self) -> None:
        texts = [self.input] if isinstance(self.input, str) else self.input or []
        check_text(texts, PROMPT_MAX_BYTES, "input", "inputs")


class EmbeddingsBody(Lenient, kw_only=True):
    """The legacy `/api/embeddings`: one `prompt`."""

    model: str | None = None
    prompt: Annotated[str, Meta(max_length=PROMPT_MAX_BYTES)] = ""
    options: Options = None
    keep_alive: KeepAlive = None


class ShowBody(Named, kw_only=True):
    verbose: bool = False


class PullBody(Named, kw_only=True):
    stream: bool = True
    insecure: bool | None = None  # accepted: pulls go to the Hub over HTTPS


class DeleteBody(Named, kw_only=True):
    pass


class CopyBody(Lenient, kw_only=True):
    source: str
    destination: str


class VerifyBody(Lenient, kw_only=True):
    model: str | None = None  # only that model's blobs; none: every model's
    stream: bool = True


class CreateBody(Named, kw_only=True):
    stream: bool = True
    from_: str | None = field(default=None, name="from")  # `from` is a Python keyword
    files: dict[str, str] | None = None  # file name -> blob digest (a GGUF, or a model's files)
    adapters: dict[str, str] | None = None
    draft: str | None = None  # a model (by name) that drafts tokens for speculative decoding
    template: str | None = None
    system: str | None = None
    parameters: Options = None
    messages: Annotated[list[OllamaMessage], Meta(max_length=MAX_MESSAGES)] | None = None
    license: str | list[str] | None = None
    modelfile: str | None = None  # the old form: refused with what to send instead
    quantize: str | None = None  # refused: pull the quantization wanted


MODELS = (
    GenerateBody,
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    ShowBody,
    PullBody,
    DeleteBody,
    CopyBody,
    CreateBody,
    VerifyBody,
)
