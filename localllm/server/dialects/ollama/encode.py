"""Ollama's wire objects from the service's events: pure functions building the reply models of `replies.py`
(`api.py` frames them as NDJSON), and the model entries of `/api/tags`."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from ....domain.events import Done, Event, Thinking, Token, TokenLogprob, ToolCalls
from ....domain.messages import ToolCall
from ....domain.modelinfo import ModelDetails
from ....modelstore.models import DamagedModel, Model
from ....service.generation import Answer
from ...replies import UNSET, TopLogprob
from ...replies import TokenLogprob as ReplyLogprob
from . import replies as r


def timestamp(t: float | None = None) -> str:
    """RFC 3339 with nanosecond-style precision, as Ollama writes `created_at`."""
    moment = datetime.datetime.fromtimestamp(
        t if t is not None else datetime.datetime.now().timestamp(), tz=datetime.timezone.utc
    )
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


Line = r.OllamaGenerateLine | r.OllamaChatLine


def _line(
    key: str,
    model: str,
    piece: str,
    *,
    calls: Sequence[ToolCall] = (),
    thinking: str = "",
    logprobs: Sequence[TokenLogprob] = (),
) -> Line:
    """A generate (`key` "response") or chat (`key` "message") line: its text, with its reasoning apart."""
    lps = _logprobs(logprobs) if logprobs else UNSET
    if key == "response":
        think = thinking or UNSET
        return r.OllamaGenerateLine(
            model=model, created_at=timestamp(), response=piece, thinking=think, done=False, logprobs=lps
        )
    message = r.OllamaAssistantMessage(
        role="assistant", content=piece, thinking=thinking or UNSET, tool_calls=_ollama_calls(calls) if calls else UNSET
    )
    return r.OllamaChatLine(model=model, created_at=timestamp(), message=message, done=False, logprobs=lps)


def _logprobs(lps: Sequence[TokenLogprob]) -> list[ReplyLogprob]:
    return [
        ReplyLogprob(
            token=lp.token,
            logprob=lp.logprob,
            bytes=list(lp.bytes),
            top_logprobs=[TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for _, t, v in lp.top],
        )
        for lp in lps
    ]


def _finished(line: Line, done: Done, *, context: bool) -> Line:
    """`line` as the last one: `done`, with Ollama's counters (durations in nanoseconds), the input tokens
    dropped to fit the context (never cut silently), speculative decoding's counts and, for a generate, the
    `context`."""
    line.done = True
    line.done_reason = done.reason
    line.total_duration = done.total_duration
    line.load_duration = done.load_duration
    line.prompt_eval_count = done.prompt_eval_count
    line.prompt_eval_duration = done.prompt_eval_duration
    line.eval_count = done.eval_count
    line.eval_duration = done.eval_duration
    if done.truncated:
        line.truncated = done.truncated
    if done.draft_count:
        line.draft_count = done.draft_count
        line.draft_accepted_count = done.draft_accepted
    if context and done.context and done.reason not in ("load", "unload"):
        line.context = list(done.context)
    return line


def encode(event: Event, model: str, key: str, *, context: bool) -> Line:
    """One event as Ollama's stream line for generate (`key` "response") or chat (`key` "message")."""
    if isinstance(event, Token):
        return _line(key, model, event.text, logprobs=event.logprobs)
    if isinstance(event, ToolCalls):
        return _line(key, model, "", calls=event.calls)
    if isinstance(event, Thinking):
        return _line(key, model, "", thinking=event.text)
    if not isinstance(event, Done):  # a call's pieces: Ollama sends calls whole (`ToolCalls`)
        return _line(key, model, "")
    return _finished(_line(key, model, ""), event, context=context)


def encode_whole(answer: Answer, model: str, key: str, *, context: bool) -> Line:
    """The whole answer as one object (`stream: false`)."""
    line = _line(key, model, answer.text, calls=answer.tool_calls, thinking=answer.thinking, logprobs=answer.logprobs)
    return _finished(line, answer.done, context=context)


def _ollama_calls(calls: Sequence[ToolCall]) -> list[r.OllamaCall]:
    return [
        r.OllamaCall(id=c.id, function=r.OllamaToolFunction(index=i, name=c.name, arguments=c.arguments))
        for i, c in enumerate(calls)
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
