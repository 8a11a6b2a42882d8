"""The Responses API's answers as reply models (`server/replies.py`): the response object, its output items,
its stream's events (tagged by `type`) and the routes on stored responses."""

from __future__ import annotations

from typing import Any, Literal

from ...replies import OpenReply, Reply


class ReasoningTextPart(Reply, tag_field="type", tag="reasoning_text", kw_only=True):
    text: str


class OutputTextPart(Reply, tag_field="type", tag="output_text", kw_only=True):
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class ReasoningItem(Reply, tag_field="type", tag="reasoning", kw_only=True):
    id: str
    summary: list[Any]
    content: list[ReasoningTextPart]
    status: str


class MessageItem(Reply, tag_field="type", tag="message", kw_only=True):
    id: str
    status: str
    role: Literal["assistant"]
    content: list[OutputTextPart]


class FunctionCallItem(Reply, tag_field="type", tag="function_call", kw_only=True):
    id: str
    status: str
    call_id: str
    name: str
    arguments: str  # a JSON text


OutputItem = ReasoningItem | MessageItem | FunctionCallItem


class ResponseError(Reply, kw_only=True):
    code: str
    message: str


class IncompleteDetails(Reply, kw_only=True):
    reason: str


class InputTokensDetails(Reply, kw_only=True):
    cached_tokens: int


class OutputTokensDetails(Reply, kw_only=True):
    reasoning_tokens: int


class ResponsesUsage(Reply, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseObject(OpenReply, kw_only=True):
    """A response: its fields, and the request's own fields echoed back (instructions, tools, sampling ...)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    model: str
    output: list[OutputItem]
    usage: ResponsesUsage | None


# -- the stream's events ---------------------------------------------------------------------------------------


class _Event(Reply, tag_field="type", kw_only=True):
    sequence_number: int


class _Snapshot(_Event, kw_only=True):
    response: ResponseObject


class Created(_Snapshot, tag="response.created", kw_only=True):
    pass


class InProgress(_Snapshot, tag="response.in_progress", kw_only=True):
    pass


class Completed(_Snapshot, tag="response.completed", kw_only=True):
    pass


class Incomplete(_Snapshot, tag="response.incomplete", kw_only=True):
    pass


class Failed(_Snapshot, tag="response.failed", kw_only=True):
    pass


class _ItemEvent(_Event, kw_only=True):
    output_index: int


class OutputItemAdded(_ItemEvent, tag="response.output_item.added", kw_only=True):
    item: OutputItem


class OutputItemDone(_ItemEvent, tag="response.output_item.done", kw_only=True):
    item: OutputItem


class _PartEvent(_ItemEvent, kw_only=True):
    item_id: str
    content_index: int


class ContentPartAdded(_PartEvent, tag="response.content_part.added", kw_only=True):
    part: ReasoningTextPart | OutputTextPart


class ContentPartDone(_PartEvent, tag="response.content_part.done", kw_only=True):
    part: ReasoningTextPart | OutputTextPart


class OutputTextDelta(_PartEvent, tag="response.output_text.delta", kw_only=True):
    delta: str
    logprobs: list[Any]


class OutputTextDone(_PartEvent, tag="response.output_text.done", kw_only=True):
    text: str
    logprobs: list[Any]


class ReasoningTextDelta(_PartEvent, tag="response.reasoning_text.delta", kw_only=True):
    delta: str


class ReasoningTextDone(_PartEvent, tag="response.reasoning_text.done", kw_only=True):
    text: str


class ArgumentsDelta(_ItemEvent, tag="response.function_call_arguments.delta", kw_only=True):
    item_id: str
    delta: str


class ArgumentsDone(_ItemEvent, tag="response.function_call_arguments.done", kw_only=True):
    item_id: str
    name: str
    arguments: str


class StreamError(Reply, tag_field="type", tag="error", kw_only=True):
    """The event that ends a stream cut short by an error."""

    code: str | None
    message: str
    param: str | None


StreamEvent = (
    Created
    | InProgress
    | Completed
    | Incomplete
    | Failed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | ReasoningTextDelta
    | ReasoningTextDone
    | ArgumentsDelta
    | ArgumentsDone
    | StreamError
)


# -- the other routes ------------------------------------------------------------------------------------------


class ResponsesInputTokens(Reply, kw_only=True):
    object: Literal["response.input_tokens"]
    input_tokens: int


class ResponsesDeleted(Reply, kw_only=True):
    id: str
    object: Literal["response.deleted"]
    deleted: bool


class ResponsesInputItems(Reply, kw_only=True):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


MODELS = (ResponseObject, StreamEvent, ResponsesInputTokens, ResponsesDeleted, ResponsesInputItems)
