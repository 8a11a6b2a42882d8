"""Anthropic's Messages request bodies (`POST /v1/messages`, `POST /v1/messages/count_tokens`), declared once:
the parser, the checks and the OpenAPI schemas all come from these models (`server/wire.py`).

Unknown top-level fields go to the one field policy (`server/fieldpolicy.py`: reported, or refused under
LOCALLLM_STRICT_FIELDS=1); inside blocks and the nested objects they are ignored (the SDKs add fields there:
`cache_control` may sit on any block, a tool, a system block). Content blocks are a tagged union on `type`;
`image` blocks are taken in user turns and tool results (the service checks the model reads images);
`document` blocks are declared so that they are refused by name; what a block may hold in which turn is
`requests.py`'s to say. A message may have the `system` role (Claude Code's mid-conversation system
messages): it is kept as a system turn, and folded into the next user turn where the template has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from msgspec import Meta

from ....domain.limits import MAX_MESSAGES, MAX_STOP, MAX_TOOLS, PROMPT_MAX_BYTES
from ...wire import Lenient, Strict, check_text


class TextBlock(Lenient, tag_field="type", tag="text"):
    text: str


class ThinkingBlock(Lenient, tag_field="type", tag="thinking"):
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(Lenient, tag_field="type", tag="redacted_thinking"):
    data: str = ""


class ToolUseBlock(Lenient, tag_field="type", tag="tool_use"):
    id: str | None = None  # required in an assistant turn (`requests.py`)
    name: str | None = None
    input: dict[str, Any] | None = None


class ToolResultBlock(Lenient, tag_field="type", tag="tool_result"):
    tool_use_id: str
    content: str | list[ResultBlock] | None = None  # text and images; documents are refused by name
    is_error: bool = False


class Base64Source(Lenient, tag_field="type", tag="base64"):
    data: str  # the base64 file
    media_type: str = ""  # "image/png", "image/jpeg", ...: the file's own header is what is read


class URLSource(Lenient, tag_field="type", tag="url"):
    url: str  # fetched where LOCALLLM_ALLOW_IMAGE_URLS allows it


class ImageBlock(Lenient, tag_field="type", tag="image"):
    source: Base64Source | URLSource


class DocumentBlock(Lenient, tag_field="type", tag="document"):
    source: dict[str, Any] | None = None


ResultBlock = TextBlock | ImageBlock | DocumentBlock
Block = TextBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock | ImageBlock | DocumentBlock
Content = str | list[Block]


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant", "system"]  # system: a mid-conversation system message (text only)
    content: Content


class AnthropicTool(Lenient, kw_only=True):
    name: str | None = None
    type: str = "custom"  # Anthropic's server tools (web_search_..., bash_...) are refused by `requests.py`
    description: str = ""
    input_schema: dict[str, Any] | None = None  # required for a custom tool (`requests.py`)


class AnthropicToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None  # "tool": the one to call
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(Lenient):
    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | None = None  # "enabled": required, 1 to max_tokens - 1


class ContextEdit(Lenient, kw_only=True):
    type: str  # clear_thinking_*: accepted (earlier thinking is never in the prompt here); others refused
    keep: Any = None


class ContextManagement(Lenient, kw_only=True):
    edits: Annotated[list[ContextEdit], Meta(max_length=16)] = []


class OutputFormat(Lenient):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(Lenient):
    format: OutputFormat | None = None
    effort: str | None = None  # accepted and ignored


def _texts(content: str | Sequence[Block] | Sequence[ResultBlock] | None) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content:
        if isinstance(block, TextBlock):
            out.append(block.text)
        elif isinstance(block, ToolResultBlock):
            out += _texts(block.content)
    return out


class CountTokensRequest(Strict, kw_only=True):
    """`POST /v1/messages/count_tokens`: the prompt of a Messages request, no sampling."""

    model: str
    messages: Annotated[list[AnthropicMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system: Content | None = None
    tools: Annotated[list[AnthropicTool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    context_management: ContextManagement | None = None  # Claude Code's beta: `requests.py` says which edits

    def check(self) -> None:
        texts = [*_texts(self.system), *(t for m in self.messages for t in _texts(m.content))]
        check_text(texts, PROMPT_MAX_BYTES, "messages", "messages")


class MessagesRequest(CountTokensRequest, kw_only=True):
    """`POST /v1/messages`."""

    max_tokens: Annotated[int, Meta(ge=1)]
    temperature: Annotated[float, Meta(ge=0, le=1)] = 1.0
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    stop_sequences: str | Annotated[list[str], Meta(max_length=MAX_STOP)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None  # accepted and ignored (`user_id`)
    service_tier: str | None = None  # accepted and ignored, as the next three
    speed: str | None = None
    inference_geo: str | None = None
    cache_control: dict[str, Any] | None = None  # prompt caching is automatic here (a slot's KV is reused)


MODELS = (MessagesRequest, CountTokensRequest)
