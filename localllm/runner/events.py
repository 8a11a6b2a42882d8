"""What a runner answers: `RunnerInfo` once loaded, then per request `Text`, `Finished`, `TokenList`, `Vectors`,
`Scores` or `Failure`, and the line each makes (`encode_event`/`decode_event`).

A `Failure`'s `kind` is set where the failure arises: "out_of_memory" (llama.cpp said it could not allocate),
"load" (the model did not load for another reason; a runner that cannot load sends this before its
"ready"), "engine" (llama.cpp failed while computing), "context" (the input does not fit: `n_tokens`,
`n_ctx` given), "request" (bad input) or "worker" (an RPC worker of `LoadSpec.rpc_servers` cannot be reached
and the model does not fit without it). The daemon adds "crash" (the runner died), "hang" (it made no
progress) and "worker" (it died because an RPC worker stopped answering: llama.cpp ends the process then).
llama.cpp's own output goes to the runner's stderr, never to this stream.

A long `TokenList` or `Vectors` (the tokens of 16 MiB of text, 2,048 embeddings) goes as several messages of the
same kind (`parts`), each but the last with `more`; the daemon joins them (`join`). Each is parsed on its own, so
the daemon's event loop is never held for the whole of a long answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, Literal, get_args

from ..domain.errors import ContextLengthExceeded, EngineError, EngineFailure, InvalidRequest
from ..domain.events import Done, Token, TokenLogprob
from ..domain.modelinfo import DeviceSplit, PromptCacheStats
from . import split
from .wire import Message, ProtocolError, decode_line, encode_line

ErrorKind = Literal[EngineFailure, "context", "request"]
PART_TOKENS = 16384  # tokens (and their pieces) per message of a long TokenList
PART_VECTORS = 64  # vectors per message of a long Vectors (1,024 dimensions: ~1.3 MB)
ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


@dataclass(frozen=True)
class RunnerInfo:
    """What a runner says once its model is loaded (its "ready" event)."""

    EV: ClassVar[str] = "ready"

    n_ctx: int = 0  # tokens per sequence
    n_ctx_train: int = 0
    n_parallel: int = 0  # sequence slots
    n_vocab: int = 0
    gpu_offload: bool = False
    n_gpu_layers: int = 0
    n_layer: int = 0
    embedding: bool = False
    n_embd: int = 0
    devices: tuple[DeviceSplit, ...] = ()  # split across RPC workers: each device's layers and memory
    workers_lost: tuple[str, ...] = ()  # RPC workers of the spec that did not answer (loaded without them)
    vision: bool = False  # its projector (LoadSpec.projector) takes images
    audio: bool = False  # its projector takes audio

    def to_message(self) -> Message:
        message = {"ev": self.EV, **{f.name: getattr(self, f.name) for f in fields(self)}}
        message["devices"] = [dataclasses.asdict(d) for d in self.devices]  # (split.from_message reads them)
        message["workers_lost"] = list(self.workers_lost)
        return message

    @classmethod
    def from_message(cls, message: Message) -> RunnerInfo:
        return cls(
            n_ctx=int(message.get("n_ctx", 0)),
            n_ctx_train=int(message.get("n_ctx_train", 0)),
            n_parallel=int(message.get("n_parallel", 0)),
            n_vocab=int(message.get("n_vocab", 0)),
            gpu_offload=bool(message.get("gpu_offload", False)),
            n_gpu_layers=int(message.get("n_gpu_layers", 0)),
            n_layer=int(message.get("n_layer", 0)),
            embedding=bool(message.get("embedding", False)),
            n_embd=int(message.get("n_embd", 0)),
            devices=tuple(split.from_message(d) for d in message.get("devices") or ()),
            workers_lost=tuple(str(w) for w in message.get("workers_lost") or ()),
            vision=bool(message.get("vision", False)),
            audio=bool(message.get("audio", False)),
        )


@dataclass(frozen=True)
class Text(Token):
    """A piece of a generation's output (one or more tokens). It is the `Token` the daemon passes on, so
    nothing is copied per piece."""

    EV: ClassVar[str] = "text"

    def to_message(self) -> Message:
        if self.logprobs:
            return {"ev": "text", "text": self.text, "logprobs": [_logprob_message(lp) for lp in self.logprobs]}
        return {"ev": "text", "text": self.text}

    @classmethod
    def from_message(cls, message: Message) -> Text:
        lps = message.get("logprobs")
        return cls(message["text"], tuple(_logprob(x) for x in lps) if lps else ())


@dataclass(frozen=True)
class Finished(Done):
    """The end of a generation with its counters (the `Done` the daemon passes on); reason "stop",
    "length" or "cancel"."""

    EV: ClassVar[str] = "done"

    def to_message(self) -> Message:
        return {
            "ev": self.EV,
            "reason": self.reason,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": self.prompt_eval_duration,
            "eval_count": self.eval_count,
            "eval_duration": self.eval_duration,
            "cached_tokens": self.cached_tokens,
            "context": list(self.context or ()),
            "truncated": self.truncated,
            "stop_sequence": self.stop_sequence,
            "draft_count": self.draft_count,
            "draft_accepted": self.draft_accepted,
        }

    @classmethod
    def from_message(cls, message: Message) -> Finished:
        return cls(
            reason=str(message["reason"]),
            prompt_eval_count=int(message["prompt_eval_count"]),
            prompt_eval_duration=int(message["prompt_eval_duration"]),
            eval_count=int(message["eval_count"]),
            eval_duration=int(message["eval_duration"]),
            context=tuple(message.get("context") or ()),
            cached_tokens=int(message.get("cached_tokens", 0)),
            truncated=int(message.get("truncated", 0)),
            stop_sequence=message.get("stop_sequence"),
            draft_count=int(message.get("draft_count", 0)),
            draft_accepted=int(message.get("draft_accepted", 0)),
        )


@dataclass(frozen=True)
class TokenList:
    """The answer to `Tokenize`: the tokens, and with `pieces` asked for, each one's bytes. For a prompt with
    media, each position of a media chunk is a pseudo id (negative: `mediaprompt.pseudo_ids`)."""

    EV: ClassVar[str] = "tokens"

    tokens: tuple[int, ...]
    pieces: tuple[bytes, ...] | None = None
    more: bool = False  # a part of a long answer: more parts follow

    def to_message(self) -> Message:
        message: Message = {"ev": self.EV, "tokens": list(self.tokens)}
        if self.pieces is not None:
            message["pieces"] = [list(p) for p in self.pieces]
        if self.more:
            message["more"] = True
        return message

    @classmethod
    def from_message(cls, message: Message) -> TokenList:
        pieces = message.get("pieces")
        return cls(
            tuple(int(t) for t in message["tokens"]),
            None if pieces is None else tuple(bytes(p) for p in pieces),
            bool(message.get("more", False)),
        )


@dataclass(frozen=True)
class Vectors:
    """The answer to `Embed`: one vector per input, and the tokens evaluated over all of them."""

    EV: ClassVar[str] = "embeddings"

    vectors: list[list[float]]
    prompt_eval_count: int
    more: bool = False  # a part of a long answer: more parts follow

    def to_message(self) -> Message:
        message = {"ev": self.EV, "embeddings": self.vectors, "prompt_eval_count": self.prompt_eval_count}
        if self.more:
            message["more"] = True
        return message

    @classmethod
    def from_message(cls, message: Message) -> Vectors:
        vectors = message["embeddings"]
        if not isinstance(vectors, list):
            raise ValueError("embeddings must be a list")
        return cls(vectors, int(message["prompt_eval_count"]), bool(message.get("more", False)))


@dataclass(frozen=True)
class Scores:
    """The answer to `Rerank`: one score per document, in order, and the tokens evaluated over all pairs."""

    EV: ClassVar[str] = "scores"

    scores: tuple[float, ...]
    prompt_eval_count: int

    def to_message(self) -> Message:
        return {"ev": self.EV, "scores": list(self.scores), "prompt_eval_count": self.prompt_eval_count}

    @classmethod
    def from_message(cls, message: Message) -> Scores:
        scores = message["scores"]
        if not isinstance(scores, list):
            raise ValueError("scores must be a list")
        return cls(tuple(float(s) for s in scores), int(message["prompt_eval_count"]))


@dataclass(frozen=True)
class Failure:
    """A request (or, with no id, the load) failed; `kind` says how (see the module's doc)."""

    EV: ClassVar[str] = "error"

    kind: ErrorKind
    message: str
    n_tokens: int = 0  # kind "context": the input's length and the context's
    n_ctx: int = 0

    def to_message(self) -> Message:
        message: Message = {"ev": self.EV, "kind": self.kind, "message": self.message}
        if self.kind == "context":
            message.update(n_tokens=self.n_tokens, n_ctx=self.n_ctx)
        return message

    @classmethod
    def from_message(cls, message: Message) -> Failure:
        kind = message.get("kind")
        text = str(message.get("message") or "the model runner failed")
        if kind not in ERROR_KINDS:
            return cls("engine", text)
        return cls(kind, text, int(message.get("n_tokens") or 0), int(message.get("n_ctx") or 0))

    def error(self) -> Exception:
        """The exception the daemon raises for it."""
        if self.kind == "context":
            return ContextLengthExceeded(self.n_tokens, self.n_ctx)
        if self.kind == "request":
            return InvalidRequest(self.message)
        return EngineError(self.message, kind=self.kind)


@dataclass(frozen=True)
class CacheReport(PromptCacheStats):
    """The runner's prompt cache (no id): sent when jobs start, kept by the daemon for `/api/ps`."""

    EV: ClassVar[str] = "cache"

    def to_message(self) -> Message:
        return {"ev": self.EV, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_message(cls, message: Message) -> CacheReport:
        return cls(**{f.name: int(message.get(f.name) or 0) for f in fields(cls)})


Event = RunnerInfo | Text | Finished | TokenList | Vectors | Scores | Failure | CacheReport
_EVENTS: dict[str, type[Event]] = {
    t.EV: t for t in (RunnerInfo, Text, Finished, TokenList, Vectors, Scores, Failure, CacheReport)
}


def parts(event: Event) -> list[Event]:
    """`event` as the messages it is sent in: itself, or a long `TokenList` or `Vectors` in parts (see the doc)."""
    if isinstance(event, TokenList) and len(event.tokens) > PART_TOKENS:
        n, step, pieces = len(event.tokens), PART_TOKENS, event.pieces
        return [
            TokenList(event.tokens[i : i + step], None if pieces is None else pieces[i : i + step], i + step < n)
            for i in range(0, n, step)
        ]
    if isinstance(event, Vectors) and len(event.vectors) > PART_VECTORS:
        n, step = len(event.vectors), PART_VECTORS
        return [
            Vectors(event.vectors[i : i + step], event.prompt_eval_count if i + step >= n else 0, i + step < n)
            for i in range(0, n, step)
        ]
    return [event]


def join(parts: Sequence[Event]) -> Event:
    """The answer sent in `parts` (the last one without `more`); `ProtocolError` if they are not parts of one."""
    lists = [e for e in parts if isinstance(e, TokenList)]
    if len(lists) == len(parts):
        tokens = tuple(t for e in lists for t in e.tokens)
        if lists[0].pieces is None:
            return TokenList(tokens)
        pieces = tuple(p for e in lists for p in e.pieces or ())
        if len(pieces) != len(tokens):
            raise ProtocolError("the parts of a token list disagree on their pieces")
        return TokenList(tokens, pieces)
    vectors = [e for e in parts if isinstance(e, Vectors)]
    if len(vectors) == len(parts):
        return Vectors([v for e in vectors for v in e.vectors], sum(e.prompt_eval_count for e in vectors))
    raise ProtocolError(f"the parts of an answer are of several kinds: {', '.join(e.EV for e in parts)}")


def encode_event(rid: str | None, event: Event) -> bytes:
    if type(event) is Text and not event.logprobs:  # the per-token path: as little work as possible
        return encode_line({"ev": "text", "id": rid, "text": event.text})
    message = event.to_message()
    if rid is not None:
        message["id"] = rid
    return encode_line(message)


def decode_event(line: bytes) -> tuple[str | None, Event]:
    """The id (None for a runner-wide event) and event of a line; `ProtocolError` if it is not one."""
    message = decode_line(line)
    rid = message.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError(f"an event with the id {rid!r}")
    kind = _EVENTS.get(message.get("ev"))  # type: ignore[arg-type]
    if kind is None:
        raise ProtocolError(f"unknown event {message.get('ev')!r}")
    try:
        return rid, kind.from_message(message)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad {kind.EV} event: {exc}") from exc


def _logprob_message(lp: TokenLogprob) -> Message:
    return {"id": lp.id, "token": lp.token, "bytes": list(lp.bytes), "logprob": lp.logprob, "top": lp.top}


def _logprob(raw: Message) -> TokenLogprob:
    return TokenLogprob(
        int(raw["id"]),
        str(raw["token"]),
        tuple(raw["bytes"]),
        float(raw["logprob"]),
        tuple((int(t), str(text), float(lp)) for t, text, lp in raw.get("top", ())),
    )
