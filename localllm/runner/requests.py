"""What the daemon asks of a loaded runner: `Job`, `Tokenize`, `Embed`, `Rerank`, `Detokenize` and `Cancel`,
and the line each makes (`encode_request`/`decode_request`).

`Job`: the prompt is tokenized with the model's BOS, or, after `context` (an earlier exchange's tokens),
without one. A prompt that does not fit the context is cut to fit with `truncate` (see `context.py`), else
refused with a "context" failure. `format` ("json" or a JSON schema) becomes a grammar in the runner unless
`sampling.grammar` is set. `logprobs`: None for none, N for each token's log-probability and the N most likely.

`Tokenize` adds the model's BOS unless `add_bos` is false; with `pieces` the answer also has each token's
bytes. With `media` (one item per `MARKER` in `text`, as a `Job`'s) the answer is the prompt as a `Job` with
those media lays it out in the context (`mediaprompt.media_prompt`, the same code): the text's tokens and, for
each position of a media chunk, a pseudo id (negative); its length is what the prompt takes. With media
there is no `pieces` and the BOS is always added (as a `Job` without `context` has it).

`Embed` (embedding models only): one vector per input (a string or token ids), in order, L2-normalised
unless `normalize` is false; an input longer than the context is cut to fit with `truncate` (its end-of-text
special tokens kept), else refused with a "context" failure.

`Rerank` (rerankers only: pooling type rank, loaded with `embedding`): one score per document for the pair
(query, document), formatted as llama-server does (`rerank.py`), all pairs evaluated together; the answer is
`Scores`. `Detokenize` is answered by a `TokenList` whose `pieces` write special tokens out (`detokenize.py`).

The defaults of these types are the daemon's defaults (sampling as Ollama's; no length limit): they are
written here and nowhere else.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ..domain.media import MEDIA_KINDS, Media
from ..domain.options import NUM_DRAFT_MAX, CallSyntax
from .wire import Message, ProtocolError, decode_line, encode_line

RANDOM_SEED = -1  # any negative seed: a random one


_SAMPLING_FLOATS = (
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "mirostat_tau",
    "mirostat_eta",
)
_SAMPLING_INTS = ("top_k", "repeat_last_n", "seed", "mirostat")
SAMPLING_OPTIONS = _SAMPLING_FLOATS + _SAMPLING_INTS  # the `Options` fields that are sampling parameters


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen (a llama.cpp sampler chain); the defaults are Ollama's."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64  # -1: the whole context
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = RANDOM_SEED
    mirostat: int = 0  # 1 or 2: Mirostat sampling (replaces top-k/top-p/min-p), as in llama.cpp
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    grammar: str | None = None  # GBNF: the output always parses
    calls: CallSyntax | None = (
        None  # a tool call's grammar in the family's syntax, lazy with triggers (unless `grammar`)
    )
    logit_bias: tuple[tuple[int, float], ...] = ()
    ignore_eos: bool = False

    @property
    def penalised(self) -> bool:
        return self.repeat_penalty != 1.0 or bool(self.presence_penalty) or bool(self.frequency_penalty)

    def to_message(self) -> Message:
        """The parameters that differ from the defaults."""
        out: Message = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = value
        if self.logit_bias:
            out["logit_bias"] = [list(pair) for pair in self.logit_bias]
        if self.calls is not None:
            out["calls"] = self.calls.to_message()
        return out

    @classmethod
    def from_message(cls, message: Message) -> Sampling:
        values: dict[str, Any] = {k: float(message[k]) for k in _SAMPLING_FLOATS if message.get(k) is not None}
        values.update({k: int(message[k]) for k in _SAMPLING_INTS if message.get(k) is not None})
        if message.get("grammar"):
            values["grammar"] = str(message["grammar"])
        if message.get("logit_bias"):
            values["logit_bias"] = tuple((int(t), float(b)) for t, b in message["logit_bias"])
        if message.get("ignore_eos"):
            values["ignore_eos"] = True
        if message.get("calls"):
            values["calls"] = CallSyntax.from_message(message["calls"])
        return cls(**values)


@dataclass(frozen=True)
class Job:
    """One generation: a prompt, how to sample, when to stop, and what to report."""

    OP: ClassVar[str] = "generate"

    prompt: str
    sampling: Sampling = field(default_factory=Sampling)
    num_predict: int = -1  # tokens to generate at most; negative: until the end or the context is full
    min_tokens: int = 0  # no end of the answer (EOS) before this many tokens
    stop: tuple[str, ...] = ()  # the answer ends before the first of these
    format: Any = None  # "json" or a JSON schema: made a grammar in the runner (unless sampling.grammar is set)
    logprobs: int | None = None  # None: none; N: each token's log-probability and the N most likely
    context: tuple[int, ...] = ()  # tokens of an earlier exchange the prompt continues (Ollama's `context`)
    truncate: bool = False  # cut a prompt too long for the context (head and tail kept) rather than refuse it
    media: tuple[Media, ...] = ()  # images and audio, one per `domain.media.MARKER` in the prompt, in order
    draft_ngram: bool = False  # speculate with prompt lookup (runner/speculate.py)
    num_draft: int = NUM_DRAFT_MAX  # the most tokens drafted per step (as many as pay: draftpolicy.py); 0: none

    def to_message(self) -> Message:
        message: Message = {"op": self.OP, "prompt": self.prompt}
        if self.media:
            message["media"] = _media_messages(self.media)
        sampling = self.sampling.to_message()
        if sampling:
            message["sampling"] = sampling
        if self.num_predict != -1:
            message["num_predict"] = self.num_predict
        if self.min_tokens:
            message["min_tokens"] = self.min_tokens
        if self.stop:
            message["stop"] = list(self.stop)
        if self.format is not None:
            message["format"] = self.format
        if self.logprobs is not None:
            message["logprobs"] = self.logprobs
        if self.context:
            message["context"] = list(self.context)
        if self.truncate:
            message["truncate"] = True
        if self.draft_ngram:
            message["draft_ngram"] = True
        if self.num_draft != Job.num_draft:
            message["num_draft"] = self.num_draft
        return message

    @classmethod
    def from_message(cls, message: Message) -> Job:
        sampling = message.get("sampling") or {}
        if not isinstance(sampling, dict):
            raise ValueError("sampling must be an object")
        logprobs = message.get("logprobs")
        return cls(
            prompt=str(message.get("prompt", "")),
            sampling=Sampling.from_message(sampling),
            num_predict=int(message.get("num_predict", -1)),
            min_tokens=int(message.get("min_tokens") or 0),
            stop=tuple(str(s) for s in message.get("stop") or ()),
            format=message.get("format"),
            logprobs=None if logprobs is None else int(logprobs),
            context=tuple(int(t) for t in message.get("context") or ()),
            truncate=bool(message.get("truncate", False)),
            media=tuple(_media(m) for m in message.get("media") or ()),
            draft_ngram=bool(message.get("draft_ngram", False)),
            num_draft=int(message.get("num_draft", cls.num_draft)),
        )


def _media_messages(media: Sequence[Media]) -> list[Message]:
    return [{"kind": m.kind, "data": base64.b64encode(m.data).decode("ascii"), "source": m.source} for m in media]


def _media(message: Message) -> Media:
    kind = message["kind"]
    if kind not in MEDIA_KINDS:
        raise ValueError(f"unknown media kind {kind!r}")
    return Media(kind, base64.b64decode(message["data"], validate=True), str(message.get("source", "")))


@dataclass(frozen=True)
class Tokenize:
    """The tokens of `text`; with `pieces`, each token's bytes too; with `media`, the prompt's positions as a
    `Job` with those media takes them (media chunks as pseudo ids)."""

    OP: ClassVar[str] = "tokenize"

    text: str
    add_bos: bool = True
    pieces: bool = False
    media: tuple[Media, ...] = ()  # images and audio, one per `domain.media.MARKER` in `text`, in order

    def __post_init__(self) -> None:
        if self.media and (self.pieces or not self.add_bos):
            raise ValueError("a tokenize request with media has no pieces and always adds the BOS")

    def to_message(self) -> Message:
        message: Message = {"op": self.OP, "text": self.text, "add_bos": self.add_bos, "pieces": self.pieces}
        if self.media:
            message["media"] = _media_messages(self.media)
        return message

    @classmethod
    def from_message(cls, message: Message) -> Tokenize:
        return cls(
            str(message.get("text", "")),
            bool(message.get("add_bos", True)),
            bool(message.get("pieces")),
            tuple(_media(m) for m in message.get("media") or ()),
        )


@dataclass(frozen=True)
class Embed:
    """One embedding per input (a string or token ids)."""

    OP: ClassVar[str] = "embed"

    inputs: tuple[str | tuple[int, ...], ...]
    truncate: bool = True
    normalize: bool = True

    @classmethod
    def of(
        cls, inputs: Sequence[str] | Sequence[Sequence[int]], truncate: bool = True, normalize: bool = True
    ) -> Embed:
        return cls(tuple(i if isinstance(i, str) else tuple(i) for i in inputs), truncate, normalize)

    def to_message(self) -> Message:
        inputs = [i if isinstance(i, str) else list(i) for i in self.inputs]
        return {"op": self.OP, "inputs": inputs, "truncate": self.truncate, "normalize": self.normalize}

    @classmethod
    def from_message(cls, message: Message) -> Embed:
        inputs = message.get("inputs")
        if not isinstance(inputs, list):
            raise ValueError("inputs must be a list")
        items: list[str | tuple[int, ...]] = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                items.append(item)
            elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                items.append(tuple(item))
            else:
                raise ValueError(f"input {i} is neither a string nor a list of token ids")
        return cls(tuple(items), bool(message.get("truncate", True)), bool(message.get("normalize", True)))


@dataclass(frozen=True)
class Rerank:
    """One relevance score per document for `query` (a reranker's classifier output)."""

    OP: ClassVar[str] = "rerank"

    query: str
    documents: tuple[str, ...]

    def to_message(self) -> Message:
        return {"op": self.OP, "query": self.query, "documents": list(self.documents)}

    @classmethod
    def from_message(cls, message: Message) -> Rerank:
        query, documents = message.get("query"), message.get("documents")
        if not isinstance(query, str):
            raise ValueError("query must be a string")
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise ValueError("documents must be a list of strings")
        return cls(query, tuple(documents))


@dataclass(frozen=True)
class Detokenize:
    """Each token's bytes, special tokens written out (answered by a `TokenList` with `pieces`)."""

    OP: ClassVar[str] = "detokenize"

    tokens: tuple[int, ...]

    def to_message(self) -> Message:
        return {"op": self.OP, "tokens": list(self.tokens)}

    @classmethod
    def from_message(cls, message: Message) -> Detokenize:
        tokens = message.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise ValueError("tokens must be a list of token ids")
        return cls(tuple(tokens))


@dataclass(frozen=True)
class Cancel:
    """Stop the request of this id (its answer ends with a Finished of reason "cancel")."""

    OP: ClassVar[str] = "cancel"

    def to_message(self) -> Message:
        return {"op": self.OP}

    @classmethod
    def from_message(cls, message: Message) -> Cancel:
        return cls()


Request = Job | Tokenize | Embed | Rerank | Detokenize | Cancel
_REQUESTS: dict[str, type[Request]] = {t.OP: t for t in (Job, Tokenize, Embed, Rerank, Detokenize, Cancel)}


def encode_request(rid: str, request: Request) -> bytes:
    message = request.to_message()
    message["id"] = rid
    return encode_line(message)


def decode_request(line: bytes) -> tuple[str, Request]:
    """The id and request of a line; `ProtocolError` (with the id, when there is one) if it is not one."""
    message = decode_line(line)
    rid = message.get("id")
    if not isinstance(rid, str):
        raise ProtocolError("a request without an id")
    kind = _REQUESTS.get(str(message.get("op")))
    if kind is None:
        raise ProtocolError(f"unknown op {message.get('op')!r}", rid)
    try:
        return rid, kind.from_message(message)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(str(exc), rid) from exc
