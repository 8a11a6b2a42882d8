"""Anthropic's answers as reply models (`server/replies.py`), built by the encoders of `api.py`: the message,
its stream's events (tagged by `type`, which is also each SSE event's name) and the error."""

from __future__ import annotations

from typing import Any, Literal

from ...replies import Reply


class AnthropicErrorDetail(Reply, kw_only=True):
    type: str
    message: str


class AnthropicError(Reply, tag_field="type", tag="error", kw_only=True):
    """An error: the body of an error status, or the `error` event that ends a stream."""

    error: AnthropicErrorDetail


class AnthropicThinking(Reply, tag_field="type", tag="thinking", kw_only=True):
    thinking: str
    signature: str


class AnthropicText(Reply, tag_field="type", tag="text", kw_only=True):
    text: str


class AnthropicToolUse(Reply, tag_field="type", tag="tool_use", kw_only=True):
    id: str
    name: str
    input: dict[str, Any]  # empty when the block opens a stream: its arguments come as deltas


Block = AnthropicThinking | AnthropicText | AnthropicToolUse


class AnthropicUsage(Reply, kw_only=True):
    """`input_tokens` excludes the cached ones (`cache_read_input_tokens`)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class AnthropicMessageObject(Reply, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[Block]
    stop_reason: StopReason | None  # None while it streams
    stop_sequence: str | None
    usage: AnthropicUsage


class MessageStart(Reply, tag_field="type", tag="message_start", kw_only=True):
    message: AnthropicMessageObject


class ContentBlockStart(Reply, tag_field="type", tag="content_block_start", kw_only=True):
    index: int
    content_block: Block


class ThinkingDelta(Reply, tag_field="type", tag="thinking_delta", kw_only=True):
    thinking: str


class TextDelta(Reply, tag_field="type", tag="text_delta", kw_only=True):
    text: str


class InputJsonDelta(Reply, tag_field="type", tag="input_json_delta", kw_only=True):
    partial_json: str


class ContentBlockDelta(Reply, tag_field="type", tag="content_block_delta", kw_only=True):
    index: int
    delta: ThinkingDelta | TextDelta | InputJsonDelta


class ContentBlockStop(Reply, tag_field="type", tag="content_block_stop", kw_only=True):
    index: int


class StopDelta(Reply, kw_only=True):
    stop_reason: StopReason
    stop_sequence: str | None


class MessageDelta(Reply, tag_field="type", tag="message_delta", kw_only=True):
    delta: StopDelta
    usage: AnthropicUsage


class MessageStop(Reply, tag_field="type", tag="message_stop", kw_only=True):
    pass


class Ping(Reply, tag_field="type", tag="ping", kw_only=True):
    pass


StreamEvent = (
    MessageStart
    | ContentBlockStart
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | AnthropicError
)


class AnthropicInputTokens(Reply, kw_only=True):
    """`/v1/messages/count_tokens`."""

    input_tokens: int


MODELS = (AnthropicMessageObject, StreamEvent, AnthropicInputTokens, AnthropicError)
