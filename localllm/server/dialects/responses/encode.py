"""Encoders: the service's events to the response object and its stream events (`Encoder`), pure functions."""

from __future__ import annotations

import json
from typing import Any

from ....domain.events import Done, Event, Thinking, Token, ToolCallArguments, ToolCalls, ToolCallStart
from ....domain.messages import ChatMessage, ToolCall
from ....service.generation import Answer
from ..openai.api import openai_error
from .requests import Turn, new_id

# -- encoders: events to the response object and its stream ------------------------------------------------


def usage(done: Done | None) -> dict[str, Any]:
    """Responses' usage: the input counts cached tokens (and says how many), as OpenAI's does."""
    cached = done.cached_tokens if done else 0
    inputs = (done.prompt_eval_count if done else 0) + cached
    outputs = done.eval_count if done else 0
    return {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + outputs,
    }


def response_object(
    turn: Turn, status: str, output: list[dict[str, Any]], done: Done | None, error: dict[str, Any] | None = None
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": turn.id,
        "object": "response",
        "created_at": turn.created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": turn.echo.get("model", str(turn.chat.model)),
        "output": output,
        **turn.echo,
        "usage": usage(done) if done else None,
    }


def status_of_done(done: Done) -> str:
    return "incomplete" if done.reason == "length" else "completed"


def reasoning_item(rid: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": rid, "type": "reasoning", "summary": [], "content": content, "status": status}


def message_item(mid: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [output_text(text)]
    return {"id": mid, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(fid: str, call: ToolCall, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": fid,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
    }


def arguments_of(call: ToolCall) -> str:
    return call.arguments_json()


def answered(conversation: tuple[ChatMessage, ...], output: list[dict[str, Any]]) -> tuple[ChatMessage, ...]:
    """The conversation with the response's output appended as the assistant's turn (what a later turn
    continues)."""
    text = "".join(p["text"] for item in output if item["type"] == "message" for p in item["content"])
    calls = tuple(
        ToolCall(item["call_id"], item["name"], json.loads(item["arguments"]))
        for item in output
        if item["type"] == "function_call"
    )
    return (*conversation, ChatMessage("assistant", text, calls))


class Encoder:
    """The stream of one response: each service event becomes its Responses events (numbered from 0), and
    the output items are built as they go (for the final object and the store)."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being written (reasoning or message)
        self.text = ""
        self.calls: dict[int, tuple[str, int, str]] = {}  # a streamed call's index: item id, output index, arguments

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        out = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return out

    def start(self) -> list[dict[str, Any]]:
        snapshot = response_object(self.turn, "in_progress", [], None)
        return [
            self.event("response.created", response=snapshot),
            self.event("response.in_progress", response=snapshot),
        ]

    def _index(self) -> int:
        return len(self.output)

    def _open(self, kind: str) -> list[dict[str, Any]]:
        events = self._close() if self.open is not None and self.open["type"] != kind else []
        if self.open is not None:
            return events
        index = self._index()
        if kind == "reasoning":
            self.open = reasoning_item(new_id("rs"), "", "in_progress")
            part = {"type": "reasoning_text", "text": ""}
        else:
            self.open = message_item(new_id("msg"), None, "in_progress")
            part = output_text("")
        self.text = ""
        iid = self.open["id"]
        return [
            *events,
            self.event("response.output_item.added", output_index=index, item=self.open),
            self.event("response.content_part.added", item_id=iid, output_index=index, content_index=0, part=part),
        ]

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        if self.open is None:
            return []
        index, iid, text = self._index(), self.open["id"], self.text
        if self.open["type"] == "reasoning":
            item = reasoning_item(iid, text, status)
            part = {"type": "reasoning_text", "text": text}
            done = self.event(
                "response.reasoning_text.done", item_id=iid, output_index=index, content_index=0, text=text
            )
        else:
            item = message_item(iid, text, status)
            part = output_text(text)
            done = self.event(
                "response.output_text.done", item_id=iid, output_index=index, content_index=0, text=text, logprobs=[]
            )
        self.open = None
        self.output.append(item)
        return [
            done,
            self.event("response.content_part.done", item_id=iid, output_index=index, content_index=0, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, (Thinking, Token)):
            kind = "reasoning" if isinstance(event, Thinking) else "message"
            events = self._open(kind)
            assert self.open is not None
            self.text += event.text
            name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
            extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
            iid, index = self.open["id"], self._index()
            delta = self.event(name, item_id=iid, output_index=index, content_index=0, delta=event.text, **extra)
            return [*events, delta]
        if isinstance(event, ToolCallStart):
            events = self._close()
            index, fid = self._index(), new_id("fc")
            item = call_item(fid, ToolCall(event.id, event.name, {}), "", "in_progress")
            self.output.append(item)  # its place, for the items after it
            self.calls[event.index] = (fid, index, "")
            return [*events, self.event("response.output_item.added", output_index=index, item=item)]
        if isinstance(event, ToolCallArguments) and event.index in self.calls:
            fid, index, arguments = self.calls[event.index]
            self.calls[event.index] = (fid, index, arguments + event.text)
            return [
                self.event("response.function_call_arguments.delta", item_id=fid, output_index=index, delta=event.text)
            ]
        if isinstance(event, ToolCalls) and self.calls:
            events = self._close()
            for k, call in enumerate(event.calls):
                if k not in self.calls:
                    continue
                fid, index, _ = self.calls.pop(k)
                events += self._call_done(fid, index, call)
            return events
        if isinstance(event, ToolCalls):
            events = self._close()
            for call in event.calls:
                index, fid, arguments = self._index(), new_id("fc"), arguments_of(call)
                events += [
                    self.event(
                        "response.output_item.added", output_index=index, item=call_item(fid, call, "", "in_progress")
                    ),
                    self.event(
                        "response.function_call_arguments.delta", item_id=fid, output_index=index, delta=arguments
                    ),
                    self.event(
                        "response.function_call_arguments.done",
                        item_id=fid,
                        output_index=index,
                        name=call.name,
                        arguments=arguments,
                    ),
                ]
                item = call_item(fid, call, arguments)
                self.output.append(item)
                events.append(self.event("response.output_item.done", output_index=index, item=item))
            return events
        return []

    def _call_done(self, fid: str, index: int, call: ToolCall) -> list[dict[str, Any]]:
        arguments = arguments_of(call)
        item = call_item(fid, call, arguments)
        self.output[index] = item
        return [
            self.event(
                "response.function_call_arguments.done",
                item_id=fid,
                output_index=index,
                name=call.name,
                arguments=arguments,
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def finish(self, done: Done) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        status = status_of_done(done)
        events = self._close("incomplete" if status == "incomplete" else "completed")
        for _, index, arguments in self.calls.values():  # begun, then not a call after all
            item = {**self.output[index], "arguments": arguments, "status": "incomplete"}
            self.output[index] = item
            events.append(self.event("response.output_item.done", output_index=index, item=item))
        self.calls = {}
        final = response_object(self.turn, status, self.output, done)
        return [*events, self.event(f"response.{status}", response=final)], final

    def fail(self, exc: BaseException) -> dict[str, Any]:
        error = openai_error(exc)["error"]
        failed = response_object(
            self.turn,
            "failed",
            self.output,
            None,
            {"code": error["code"] or error["type"], "message": error["message"]},
        )
        return self.event("response.failed", response=failed)


def whole(turn: Turn, answer: Answer) -> dict[str, Any]:
    """The response object of a whole (not streamed) answer: its reasoning, text and calls as output items."""
    encoder = Encoder(turn)
    if answer.thinking:
        encoder.feed(Thinking(answer.thinking))
    if answer.text or not answer.tool_calls:
        encoder.feed(Token(answer.text))
    if answer.tool_calls:
        encoder.feed(ToolCalls(answer.tool_calls))
    return encoder.finish(answer.done)[1]


def sse_named(obj: dict[str, Any]) -> bytes:
    """An SSE event with its `event:` line (the event's `type`), as the Responses API frames them."""
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"event: {obj.get('type', 'error')}\ndata: {data}\n\n".encode()


def error_event(exc: BaseException) -> dict[str, Any]:
    error = openai_error(exc)["error"]
    return {"type": "error", "code": error["code"], "message": error["message"], "param": error["param"]}
