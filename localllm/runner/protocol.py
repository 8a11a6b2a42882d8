"""The runner boundary: what the daemon asks of a runner process and what the runner answers, as types.

The daemon starts a runner with a `LoadSpec` (its one argument, as JSON) and then sends requests on the
runner's stdin, one JSON object per line, each with an `id` it chose; the runner answers on its stdout with
events carrying the same `id`:

daemon -> runner                                      runner -> daemon
  argv[1]: LoadSpec                                     RunnerInfo  {"ev": "ready", "n_ctx", ...}  once loaded
  Job       {"op": "generate", "id", "prompt", ...}     Text        {"ev": "text", "id", "text", "logprobs"?}
  Tokenize  {"op": "tokenize", "id", "text", ...}       Finished    {"ev": "done", "id", "reason", counters...}
  Embed     {"op": "embed", "id", "inputs", ...}        TokenList   {"ev": "tokens", "id", "tokens", "pieces"?}
  Rerank    {"op": "rerank", "id", "query", ...}        Vectors     {"ev": "embeddings", "id", "embeddings", ...}
  Detokenize {"op": "detokenize", "id", "tokens"}       Scores      {"ev": "scores", "id", "scores", ...}
  Cancel    {"op": "cancel", "id"}                      Failure     {"ev": "error", "id"?, "kind", "message", ...}
  EOF on stdin: exit

Each type has `to_message()` and `from_message()`; `encode_request`/`decode_request` and
`encode_event`/`decode_event` put the `id` around them and make the line. This module is the only code that
handles the messages as dicts: the rest of the daemon and of the runner sees the types.

A `Failure`'s `kind` is set where the failure arises: "out_of_memory" (llama.cpp said it could not allocate),
"load" (the model did not load for another reason; a runner that cannot load sends this before its
"ready"), "engine" (llama.cpp failed while computing), "context" (the input does not fit: `n_tokens`,
`n_ctx` given), "request" (bad input) or "worker" (an RPC worker of `LoadSpec.rpc_servers` cannot be reached
and the model does not fit without it). The daemon adds "crash" (the runner died), "hang" (it made no
progress) and "worker" (it died because an RPC worker stopped answering: llama.cpp ends the process then).
llama.cpp's own output goes to the runner's stderr, never to this stream.

`Job`: the prompt is tokenized with the model's BOS, or, after `context` (an earlier exchange's tokens),
without one. A prompt that does not fit the context is cut to fit with `truncate` (see `context.py`), else
refused with a "context" failure. `format` ("json" or a JSON schema) becomes a grammar in the runner unless
`sampling.grammar` is set. `logprobs`: None for none, N for each token's log-probability and the N most likely.

`Tokenize` adds the model's BOS unless `add_bos` is false; with `pieces` the answer also has each token's
bytes. `Embed` (embedding models only): one vector per input (a string or token ids), in order, L2-normalised
unless `normalize` is false; an input longer than the context is cut to fit with `truncate` (its end-of-text
special tokens kept), else refused with a "context" failure.

`Rerank` (rerankers only: pooling type rank, loaded with `embedding`): one score per document for the pair
(query, document), formatted as llama-server does (`rerank.py`), all pairs evaluated together; the answer is
`Scores`. `Detokenize` is answered by a `TokenList` whose `pieces` write special tokens out (`detokenize.py`).

The defaults of these types are the daemon's defaults (sampling as Ollama's; no length limit; the load
options): they are written here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args

from ..errors import ContextLengthExceeded, EngineError, EngineFailure, InvalidRequest
from ..types import DeviceSplit, Done, Token, TokenLogprob
from . import split

Message = dict[str, Any]

STREAM_INTERVAL = 0.025  # seconds between a stream's "text" messages (its first token goes at once)
RANDOM_SEED = -1  # any negative seed: a random one

ErrorKind = Literal[EngineFailure, "context", "request"]
ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


class ProtocolError(ValueError):
    """A message that is not what the protocol says; `rid` is its id when it had one."""

    def __init__(self, message: str, rid: str | None = None) -> None:
        super().__init__(message)
        self.rid = rid


# -- loading --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model; equal specs can share a runner."""

    model_path: str
    n_ctx: int  # per sequence: the context is n_ctx * n_parallel tokens
    num_gpu: int = -1  # layers on the GPU; -1: every layer when llama.cpp can offload, else none
    n_threads: int = 0  # 0: llama.cpp's choice
    n_batch: int = 512
    use_mmap: bool = True
    n_parallel: int = 1  # sequence slots decoded together
    embedding: bool = False  # an embedding model: one sequence, pooled outputs, answers `Embed` only
    lora: tuple[str, ...] = ()  # LoRA adapter GGUFs applied (scale 1) on top of the model (Modelfile ADAPTER)
    stream_interval: float = STREAM_INTERVAL  # seconds between a stream's text messages (LOCALLLM_STREAM_INTERVAL)
    flash_attention: str = "auto"  # "auto" (llama.cpp's choice), "on" or "off" (LOCALLLM_FLASH_ATTENTION)
    rpc_servers: tuple[str, ...] = ()  # llama.cpp RPC workers (host:port) the layers are split across

    def to_message(self) -> Message:
        message = {f.name: getattr(self, f.name) for f in fields(self)}
        message["lora"] = list(self.lora)
        message["rpc_servers"] = list(self.rpc_servers)
        return message

    @classmethod
    def from_message(cls, message: Message) -> LoadSpec:
        try:
            return cls(
                model_path=str(message["model_path"]),
                n_ctx=int(message["n_ctx"]),
                num_gpu=int(message.get("num_gpu", cls.num_gpu)),
                n_threads=int(message.get("n_threads", cls.n_threads)),
                n_batch=int(message.get("n_batch", cls.n_batch)),
                use_mmap=bool(message.get("use_mmap", cls.use_mmap)),
                n_parallel=int(message.get("n_parallel", cls.n_parallel)),
                embedding=bool(message.get("embedding", cls.embedding)),
                lora=tuple(str(p) for p in message.get("lora", ())),
                stream_interval=float(message.get("stream_interval", cls.stream_interval)),
                flash_attention=str(message.get("flash_attention", cls.flash_attention)),
                rpc_servers=tuple(str(p) for p in message.get("rpc_servers", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad load spec: {exc}") from exc

    def to_argument(self) -> str:
        return json.dumps(self.to_message(), separators=(",", ":"))

    @classmethod
    def from_argument(cls, argument: str) -> LoadSpec:
        return cls.from_message(_object(argument))


# -- requests -------------------------------------------------------------------------------------------

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

    def to_message(self) -> Message:
        message: Message = {"op": self.OP, "prompt": self.prompt}
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
        )


@dataclass(frozen=True)
class Tokenize:
    """The tokens of `text`; with `pieces`, each token's bytes too."""

    OP: ClassVar[str] = "tokenize"

    text: str
    add_bos: bool = True
    pieces: bool = False

    def to_message(self) -> Message:
        return {"op": self.OP, "text": self.text, "add_bos": self.add_bos, "pieces": self.pieces}

    @classmethod
    def from_message(cls, message: Message) -> Tokenize:
        return cls(str(message.get("text", "")), bool(message.get("add_bos", True)), bool(message.get("pieces")))


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
    return _encode(message)


def decode_request(line: bytes) -> tuple[str, Request]:
    """The id and request of a line; `ProtocolError` (with the id, when there is one) if it is not one."""
    message = _object(line)
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


# -- events ---------------------------------------------------------------------------------------------


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
        )


@dataclass(frozen=True)
class TokenList:
    """The answer to `Tokenize`: the tokens, and with `pieces` asked for, each one's bytes."""

    EV: ClassVar[str] = "tokens"

    tokens: tuple[int, ...]
    pieces: tuple[bytes, ...] | None = None

    def to_message(self) -> Message:
        message: Message = {"ev": self.EV, "tokens": list(self.tokens)}
        if self.pieces is not None:
            message["pieces"] = [list(p) for p in self.pieces]
        return message

    @classmethod
    def from_message(cls, message: Message) -> TokenList:
        pieces = message.get("pieces")
        return cls(
            tuple(int(t) for t in message["tokens"]), None if pieces is None else tuple(bytes(p) for p in pieces)
        )


@dataclass(frozen=True)
class Vectors:
    """The answer to `Embed`: one vector per input, and the tokens evaluated over all of them."""

    EV: ClassVar[str] = "embeddings"

    vectors: list[list[float]]
    prompt_eval_count: int

    def to_message(self) -> Message:
        return {"ev": self.EV, "embeddings": self.vectors, "prompt_eval_count": self.prompt_eval_count}

    @classmethod
    def from_message(cls, message: Message) -> Vectors:
        vectors = message["embeddings"]
        if not isinstance(vectors, list):
            raise ValueError("embeddings must be a list")
        return cls(vectors, int(message["prompt_eval_count"]))


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


Event = RunnerInfo | Text | Finished | TokenList | Vectors | Scores | Failure
_EVENTS: dict[str, type[Event]] = {t.EV: t for t in (RunnerInfo, Text, Finished, TokenList, Vectors, Scores, Failure)}


def encode_event(rid: str | None, event: Event) -> bytes:
    if type(event) is Text and not event.logprobs:  # the per-token path: as little work as possible
        return _encode({"ev": "text", "id": rid, "text": event.text})
    message = event.to_message()
    if rid is not None:
        message["id"] = rid
    return _encode(message)


def decode_event(line: bytes) -> tuple[str | None, Event]:
    """The id (None for a runner-wide event) and event of a line; `ProtocolError` if it is not one."""
    message = _object(line)
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


# -- lines ----------------------------------------------------------------------------------------------


def _encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _object(line: bytes | str) -> Message:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a protocol message is a JSON object")
    return message


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
