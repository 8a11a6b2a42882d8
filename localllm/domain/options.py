"""The options of a generation (Ollama's names, their types and ranges, the one range check and stop-list
parser every dialect uses) and the constraints on its output (grammar, JSON schema, a call's syntax)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from .errors import InvalidRequest
from .events import Done, Token

# Ollama's option names (api.Options), with the JSON type each takes.
_FLOAT = (int, float)
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": _FLOAT,
    "top_k": (int,),
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "typical_p": _FLOAT,
    "num_predict": (int,),
    # localllm's own: the most tokens an answer may have, whatever the request asks (a Modelfile's cap)
    "num_predict_max": (int,),
    "num_ctx": (int,),
    "num_batch": (int,),
    "num_keep": (int,),
    "stop": (list,),
    "seed": (int,),
    "repeat_penalty": _FLOAT,
    "repeat_last_n": (int,),
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "num_gpu": (int,),
    "main_gpu": (int,),
    "num_thread": (int,),
    "use_mmap": (bool,),
    "mirostat": (int,),
    "mirostat_tau": _FLOAT,
    "mirostat_eta": _FLOAT,
    "kv_cache_type": (str,),  # not Ollama's (it has only OLLAMA_KV_CACHE_TYPE): the per-model override
    "swa_full": (bool,),  # localllm's own (llama-server's --swa-full): LOCALLLM_SWA_FULL's per-model override
    # localllm's own: which of the daemon's LOCALLLM_RPC_SERVERS the model is split across ("none": none)
    "rpc_servers": (str,),
    # localllm's own: speculative decoding (runner/speculate.py), prompt lookup and the tokens drafted per step
    "draft_ngram": (bool,),
    "num_draft": (int,),
}
# Options that change how a model is loaded: a different value needs another runner.
LOAD_OPTIONS = (
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "use_mmap",
    "kv_cache_type",
    "swa_full",
    "rpc_servers",
)
# The KV cache's element types (Ollama's OLLAMA_KV_CACHE_TYPE values); the quantised ones need flash attention.
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # the first is the default (LOCALLLM_KV_CACHE_TYPE, a load spec's)
FLASH_ATTENTION_MODES = ("auto", "on", "off")  # the first is the default (LOCALLLM_FLASH_ATTENTION, a load spec's)
STREAM_INTERVAL = 0.025  # seconds between a stream's text messages (LOCALLLM_STREAM_INTERVAL's default)
# The load options' "let it be chosen" values: LOCALLLM_NUM_THREADS' and LOCALLLM_CACHE_RAM's defaults, a load spec's
THREADS_AUTO = 0  # CPU threads: llama.cpp's choice
CACHE_RAM_AUTO = -1  # prompt cache RAM: limits.prompt_cache_ram of the RAM free when the runner starts ("auto")
NUM_DRAFT_MAX = 64  # tokens drafted for one request in one step (each is a row of the verification batch)
UBATCH_MAX = 512  # tokens llama.cpp evaluates in one micro-batch (n_ubatch) at most, whatever num_batch
OPTION_CHOICES: dict[str, tuple[str, ...]] = {"kv_cache_type": KV_CACHE_TYPES}
# Accepted and ignored, as Ollama does, with the reason in the docs.
DEPRECATED_OPTIONS = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "numa",
        "tfs_z",
    }
)
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0.0, None),
    "top_k": (0, None),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "typical_p": (0.0, 1.0),
    "num_ctx": (0, 1 << 24),
    "num_batch": (1, 1 << 20),
    "num_keep": (-1, None),
    "num_predict": (-2, None),
    "num_predict_max": (1, None),
    "repeat_last_n": (-1, None),
    "repeat_penalty": (0.0, None),
    "num_gpu": (-1, None),
    "main_gpu": (0, 1024),
    "num_thread": (0, 1024),
    "mirostat": (0, 2),
    "mirostat_tau": (0.0, None),
    "mirostat_eta": (0.0, None),
    "num_draft": (0, NUM_DRAFT_MAX),
}


@dataclass(frozen=True)
class Options:
    """Sampling and load options; `None` means "not set here" so layers can be merged."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    num_predict: int | None = None
    num_predict_max: int | None = None  # a cap on num_predict, whatever the request asks (`bounded`)
    num_ctx: int | None = None
    num_batch: int | None = None
    num_keep: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    num_thread: int | None = None
    use_mmap: bool | None = None
    mirostat: int | None = None  # 0 off, 1 Mirostat, 2 Mirostat 2.0
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    kv_cache_type: str | None = None  # "f16", "q8_0" or "q4_0" (LOCALLLM_KV_CACHE_TYPE when not set)
    swa_full: bool | None = None  # a sliding-window model's full-size cache (LOCALLLM_SWA_FULL when not set)
    rpc_servers: str | None = None  # host:port,... of LOCALLLM_RPC_SERVERS, or "none"
    draft_ngram: bool | None = None  # speculate with prompt lookup (n-gram drafts from the prompt and answer)
    num_draft: int | None = None  # the most tokens drafted per step (0: no speculation, not even a DRAFT model)

    def merged_over(self, base: Options) -> Options:
        """These options where set, else `base`'s (request > Modelfile > defaults)."""
        mine, theirs = vars(self), vars(base)
        return Options(**{k: theirs[k] if v is None else v for k, v in mine.items()})

    def as_dict(self) -> dict[str, Any]:
        """The options that are set, JSON-ready."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if "stop" in out:
            out["stop"] = list(out["stop"])
        return out


def bounded(options: Options, model: Options, default: int) -> Options:
    """`options` (merged: request > Modelfile `model`) with the answer's length bounded: `default` tokens
    (LOCALLLM_MAX_TOKENS; 0: none) when nothing set `num_predict`, and never more than `num_predict_max` (an
    operator's cap, a Modelfile's `PARAMETER num_predict_max`; a request's own may only lower it), whatever
    the request asked (-1 and -2, "until the end", included)."""
    n = options.num_predict
    if n is None and default > 0:
        n = default
    caps = [c for c in (options.num_predict_max, model.num_predict_max) if c is not None]
    cap = min(caps) if caps else None
    if cap is not None and (n is None or n < 0 or n > cap):
        n = cap
    return options if n == options.num_predict else replace(options, num_predict=n)


def parse_options(raw: object, *, field: str = "options") -> Options:
    """Validate a JSON `options` object; every problem is an `InvalidRequest` naming the field."""
    if raw is None:
        return Options()
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{field} must be an object", field=field)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{field}.{key}"
        if key in DEPRECATED_OPTIONS:
            continue
        types = OPTION_TYPES.get(key)
        if types is None:
            raise InvalidRequest(f"unknown option {name!r}", field=name)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in types:
            raise InvalidRequest(f"{name} must be a {_type_name(types)}, not a boolean", field=name)
        if not isinstance(value, types):
            raise InvalidRequest(f"{name} must be a {_type_name(types)}, got {type(value).__name__}", field=name)
        if key == "stop":
            value = parse_stop(value, name)
        if key in _RANGES or types == _FLOAT:  # a number with no range must still be one (not NaN)
            check_range(value, name, *_RANGES.get(key, (None, None)))
        if key in OPTION_CHOICES:
            value = check_choice(value, name, OPTION_CHOICES[key])
        if _FLOAT == types:
            value = float(value)
        values[key] = value
    return Options(**values)


def check_range(
    value: float,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """The one range check of every request field: the error names the field, the bounds and the value. NaN
    and the infinities (which JSON parsers let through) are in no range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a finite number, got {value}", field=name)
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if not (below or above):
        return
    if low is not None and high is not None and not (open_low or open_high):
        bounds = f"between {low} and {high}"
    elif high is None and low is not None and not open_low:
        bounds = f"at least {low}"
    else:
        parts = [f"{'>' if open_low else '>='} {low}"] if low is not None else []
        parts += [f"{'<' if open_high else '<='} {high}"] if high is not None else []
        bounds = " and ".join(parts)
    raise InvalidRequest(f"{name} must be {bounds}, got {value}", field=name)


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    """`value` as one of `choices` (compared in lower case, as Ollama reads OLLAMA_KV_CACHE_TYPE)."""
    if value.strip().lower() not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}, got {value!r}", field=name)
    return value.strip().lower()


def parse_stop(value: object, name: str, *, limit: int | None = None) -> tuple[str, ...]:
    """The one stop-list parser: a string or a list of strings (at most `limit`); empty strings are dropped."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise InvalidRequest(f"{name} must be a string or a list of strings", field=name)
    if limit is not None and len(items) > limit:
        raise InvalidRequest(f"{name} holds {len(items)} stop sequences, at most {limit} are allowed", field=name)
    return tuple(s for s in items if s)


def _type_name(types: tuple[type, ...]) -> str:
    if types == _FLOAT:
        return "number"
    return {int: "integer", list: "list of strings", bool: "boolean", str: "string"}[types[0]]


@dataclass(frozen=True)
class CallSyntax:
    """A tool call in a format family's own syntax, as the runner makes it a grammar: one of `alternatives`,
    each a sequence of parts (a `str` is written as it is, a `dict` is a JSON schema the value there validates
    against). With `triggers` (regular expressions, as llama.cpp's lazy grammars take them) the grammar is
    lazy: the output is free until a trigger matches, and constrained from the start of that match (its first
    group's, where it has one); without, the output is constrained from its first token."""

    alternatives: tuple[tuple[str | dict[str, Any], ...], ...]
    triggers: tuple[str, ...] = ()

    def to_message(self) -> dict[str, Any]:
        return {"alternatives": [list(a) for a in self.alternatives], "triggers": list(self.triggers)}

    @classmethod
    def from_message(cls, message: Any) -> CallSyntax:
        if not isinstance(message, dict) or not isinstance(message.get("alternatives"), list):
            raise ValueError("calls must be an object with a list of alternatives")
        alternatives = []
        for alt in message["alternatives"]:
            if not isinstance(alt, list) or not all(isinstance(p, (str, dict)) for p in alt):
                raise ValueError("each alternative of calls must be a list of texts and JSON schemas")
            alternatives.append(tuple(alt))
        triggers = message.get("triggers") or []
        if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
            raise ValueError("calls.triggers must be a list of patterns")
        return cls(tuple(alternatives), tuple(triggers))


@dataclass(frozen=True)
class Constraints:
    """What shapes a generation beyond sampling options: a grammar, log-probabilities, token biases."""

    format: Any = None  # "json" or a JSON schema (dict): the output always parses (and validates)
    grammar: str | None = None  # a GBNF grammar, as llama.cpp takes it
    calls: CallSyntax | None = None  # a tool call in the family's syntax (lazy when it has triggers)
    logprobs: int | None = None  # None: none; N: each token's log-probability and the N most likely
    logit_bias: tuple[tuple[int, float], ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0  # no end of the answer (EOS) before this many tokens
    context: tuple[int, ...] = ()  # tokens of an earlier exchange the prompt continues (Ollama's `context`)


Role = Literal["system", "user", "assistant", "tool"]


DoneReason = Literal["stop", "length", "load", "unload"]


GenerationEvent = Token | Done
