"""Ollama's wire objects from the service's events: pure functions (`api.py` frames them as NDJSON)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from ....domain.events import Done, Event, Thinking, Token, TokenLogprob, ToolCalls
from ....domain.messages import ToolCall
from ....domain.modelinfo import ModelDetails
from ....modelstore.models import DamagedModel, Model
from ....service.generation import Answer


def timestamp(t: float | None = None) -> str:
    """RFC 3339 with nanosecond-style precision, as Ollama writes `created_at`."""
    moment = datetime.datetime.fromtimestamp(
        t if t is not None else datetime.datetime.now().timestamp(), tz=datetime.timezone.utc
    )
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _done_fields(done: Done) -> dict[str, Any]:
    fields = {
        "done": True,
        "done_reason": done.reason,
        "total_duration": done.total_duration,
        "load_duration": done.load_duration,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }
    if done.truncated:  # never cut silently: how many input tokens were dropped to fit the context
        fields["truncated"] = done.truncated
    if done.draft_count:  # localllm's own, beside eval_count: speculative decoding's drafted and kept tokens
        fields["draft_count"] = done.draft_count
        fields["draft_accepted_count"] = done.draft_accepted
    return fields


def _logprobs(lps: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top],
        }
        for lp in lps
    ]


def _text(key: str, piece: str, calls: Sequence[ToolCall] = (), thinking: str = "") -> dict[str, Any]:
    """The text of a generate (`key` "response") or chat (`key` "message") object, with its reasoning apart."""
    if key == "response":
        return {"response": piece, "thinking": thinking} if thinking else {"response": piece}
    message: dict[str, Any] = {"role": "assistant", "content": piece}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = _ollama_calls(calls)
    return {"message": message}


def _done_line(done: Done, *, context: bool) -> dict[str, Any]:
    line = _done_fields(done)
    if context and done.context and done.reason not in ("load", "unload"):
        line["context"] = list(done.context)
    return line


def encode(event: Event, model: str, key: str, *, context: bool) -> dict[str, Any]:
    """One event as Ollama's stream object for generate (`key` "response") or chat (`key` "message")."""
    head = {"model": model, "created_at": timestamp()}
    if isinstance(event, Token):
        line = {**head, **_text(key, event.text), "done": False}
        if event.logprobs:
            line["logprobs"] = _logprobs(event.logprobs)
        return line
    if isinstance(event, ToolCalls):
        return {**head, **_text(key, "", event.calls), "done": False}
    if isinstance(event, Thinking):
        return {**head, **_text(key, "", thinking=event.text), "done": False}
    if not isinstance(event, Done):  # a call's pieces: Ollama sends calls whole (`ToolCalls`)
        return {**head, **_text(key, ""), "done": False}
    return {**head, **_text(key, ""), **_done_line(event, context=context)}


def encode_whole(answer: Answer, model: str, key: str, *, context: bool) -> dict[str, Any]:
    """The whole answer as one object (`stream: false`)."""
    line = {"model": model, "created_at": timestamp(), **_text(key, answer.text, answer.tool_calls, answer.thinking)}
    line["done"] = False
    if answer.logprobs:
        line["logprobs"] = _logprobs(answer.logprobs)
    return {**line, **_done_line(answer.done, context=context)}


def _ollama_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls)
    ]


def model_entry(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": timestamp(model.stored.modified_at),
        "size": model.stored.manifest.size,
        "digest": model.stored.manifest.digest.removeprefix("sha256:"),
        "details": model.details.as_dict(),
    }


def damaged_entry(model: DamagedModel) -> dict[str, Any]:
    """A model that cannot be read, listed as Ollama lists any model, with `damaged` (localllm's own) saying why."""
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": timestamp(model.stored.modified_at),
        "size": model.stored.manifest.size,
        "digest": model.stored.manifest.digest.removeprefix("sha256:"),
        "details": ModelDetails().as_dict(),
        "damaged": model.problem,
    }
