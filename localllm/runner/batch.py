"""The runner's decode loop: continuous batching over sequence slots, with a prompt cache per slot.

Every step puts the next token of each generating request and chunks of new prompts into one batch,
decodes it once, and samples each request with its own sampler chain. A request joins at the next step
and leaves without disturbing the others. A slot keeps the tokens whose KV it holds, so a new request
goes to the free slot sharing the longest prefix with it and evaluates only what follows (multi-turn
chats re-send their history). Output leaves as one message per request per step.

The loop talks to llama.cpp only through `Engine` (engine.py), so it can be driven by a fake in tests.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import detokenize
from .context import cut_to_fit
from .engine import SamplingParams
from .protocol import STREAM_INTERVAL, Message

log = logging.getLogger("localllm.runner")

MAX_INTERVAL_SCALE = 4  # with n streams generating, each waits up to min(n, 4) intervals between messages

_FLOAT = (
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
_INT = ("top_k", "repeat_last_n", "seed", "mirostat")


class SamplerLike(Protocol):
    def sample(self, engine: Any, index: int) -> int: ...

    def close(self) -> None: ...


class EngineLike(Protocol):
    n_parallel: int
    n_batch: int
    n_ctx_seq: int
    tail_tile: int  # 0: no rounding of prompt tails

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...
    def piece(self, token: int) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def clear_batch(self) -> None: ...
    @property
    def batch_size(self) -> int: ...
    def add(self, token: int, pos: int, seq: int, logits: bool) -> int: ...
    def decode(self) -> int: ...
    def forget(self, seq: int, from_pos: int) -> bool: ...
    def worth_a_tile(self, n_new: int, n_past: int) -> bool: ...
    def logprobs(self, index: int, token: int, top: int) -> tuple[float, list[tuple[int, float]]]: ...


def sampling_params(options: dict[str, Any], grammar_for: Callable[[Any], str] | None = None) -> SamplingParams:
    """Sampling parameters from a request's options; `format` becomes a grammar through `grammar_for`."""
    values: dict[str, Any] = {k: float(options[k]) for k in _FLOAT if options.get(k) is not None}
    values.update({k: int(options[k]) for k in _INT if options.get(k) is not None})
    if values.get("seed", 0) < 0:
        del values["seed"]
    if options.get("grammar"):
        values["grammar"] = str(options["grammar"])
    elif options.get("format") and grammar_for is not None:
        values["grammar"] = grammar_for(options["format"])
    if options.get("ignore_eos"):
        values["ignore_eos"] = True
    if options.get("logit_bias"):
        values["logit_bias"] = tuple((int(t), float(b)) for t, b in options["logit_bias"])
    return SamplingParams(**values)


@dataclass(eq=False)
class Job:
    rid: str
    prompt: list[int]
    options: dict[str, Any]
    sampler: SamplerLike | None = None
    early: SamplerLike | None = None  # used until `min_tokens` are generated: cannot end the answer
    truncated: int = 0  # prompt tokens cut out to fit the context
    min_tokens: int = 0
    num_predict: int = -1
    stops: tuple[str, ...] = ()
    top_logprobs: int = -1  # -1: no log-probabilities
    # progress
    slot: int = -1
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    n_past: int = 0  # tokens of this sequence in the cache
    cached: int = 0
    next_token: int = -1  # sampled, not yet evaluated
    out_index: int = -1  # where this request's logits are in the current batch
    generated: list[int] = field(default_factory=list)
    held: str = ""  # text held back: it may begin a stop string
    text: list[str] = field(default_factory=list)  # to send after this step
    lps: list[dict[str, Any]] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    t_start: float = 0.0
    t_first: float = 0.0
    t_flushed: float = 0.0  # when text last went out


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's cache holds
    job: Job | None = None
    last_used: float = 0.0


class Batcher:
    def __init__(
        self,
        engine: EngineLike,
        send: Callable[[Message], None],
        make_sampler: Callable[[SamplingParams], SamplerLike],
        grammar_for: Callable[[Any], str] | None = None,
        embed: Callable[[Message], Message] | None = None,
        stream_interval: float = STREAM_INTERVAL,
    ) -> None:
        self.engine = engine
        self.stream_interval = stream_interval
        self.grammar_for = grammar_for
        self.embed = embed  # answers an `embed` message (embedding.answer), between decode steps
        self.send = send
        self.make_sampler = make_sampler
        self.slots = [Slot(i) for i in range(engine.n_parallel)]
        self.waiting: collections.deque[Job] = collections.deque()
        self.cancelled: set[str] = set()

    # -- requests ------------------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        op = message.get("op")
        rid = str(message.get("id"))
        if op == "cancel":
            self.cancelled.add(rid)
        elif op == "tokenize":
            tokens = self.engine.tokenize(str(message.get("text", "")), add_bos=bool(message.get("add_bos", True)))
            reply: Message = {"ev": "tokens", "id": rid, "tokens": tokens}
            if message.get("pieces"):  # each token's bytes, for offsets and token texts
                reply["pieces"] = [list(self.engine.piece(t)) for t in tokens]
            self.send(reply)
        elif op == "generate":
            self._submit(rid, message)
        elif op == "detokenize":
            self.send(detokenize.answer(self.engine, message))
        elif op in ("embed", "rerank"):  # `embed` answers both (runner.main picks embedding or rerank)
            if self.embed is None:
                self.send(
                    {"ev": "error", "id": rid, "kind": "request", "message": "this runner computes no embeddings"}
                )
            else:
                self.send(self.embed(message))

    def _submit(self, rid: str, message: Message) -> None:
        options: dict[str, Any] = message.get("options") or {}
        tokens = message.get("tokens")
        if tokens:
            prompt = [int(t) for t in tokens]
        elif options.get("context"):  # an earlier exchange's tokens, then the new text (no second BOS)
            prompt = [int(t) for t in options["context"]]
            prompt += self.engine.tokenize(str(message.get("prompt", "")), add_bos=False)
        else:
            prompt = self.engine.tokenize(str(message.get("prompt", "")))
        n_ctx = self.engine.n_ctx_seq
        truncated = 0
        if len(prompt) >= n_ctx and options.get("truncate"):
            prompt, truncated = cut_to_fit(prompt, n_ctx, options.get("num_predict"))
        if len(prompt) >= n_ctx:
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "kind": "context",
                    "n_tokens": len(prompt),
                    "n_ctx": n_ctx,
                    "message": f"the input is {len(prompt)} tokens, longer than the context window of {n_ctx}",
                }
            )
            return
        num_predict = options.get("num_predict")
        job = Job(
            rid,
            prompt,
            options,
            num_predict=-1 if num_predict is None else int(num_predict),
            stops=tuple(s for s in options.get("stop") or () if s),
            top_logprobs=int(options["logprobs"]) if options.get("logprobs") is not None else -1,
            truncated=truncated,
        )
        if job.num_predict == 0:
            self.send(
                {
                    "ev": "done",
                    "id": rid,
                    "reason": "length",
                    "prompt_eval_count": 0,
                    "prompt_eval_duration": 0,
                    "eval_count": 0,
                    "eval_duration": 0,
                    "cached_tokens": 0,
                    "context": prompt,
                }
            )
            return
        try:
            params = sampling_params(options, self.grammar_for)
            job.sampler = self.make_sampler(params)
            job.min_tokens = int(options.get("min_tokens") or 0)
            if job.min_tokens > 0 and not params.ignore_eos:
                job.early = self.make_sampler(dataclasses.replace(params, ignore_eos=True))
        except (ValueError, TypeError) as exc:
            self.send({"ev": "error", "id": rid, "kind": "request", "message": str(exc)})
            return
        self.waiting.append(job)

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or any(s.job is not None for s in self.slots)

    def _assign(self) -> None:
        while self.waiting:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self.waiting.popleft()
            if job.rid in self.cancelled:
                self._release(job, None)
                continue
            # The slot whose cache holds the longest prefix of this prompt, if reusing it keeps at least half of
            # what it holds; else the least recently used slot (an empty one first). So a prompt that shares
            # only a BOS with a conversation's slot leaves that conversation's cache alone.
            reuse = {s.seq: min(_common_prefix(s.tokens, job.prompt), len(job.prompt) - 1) for s in free}
            good = [s for s in free if reuse[s.seq] > 0 and 2 * reuse[s.seq] >= len(s.tokens)]
            if good:
                slot = max(good, key=lambda s: (reuse[s.seq], -s.last_used))
            else:
                slot = min(free, key=lambda s: s.last_used)
            keep = reuse[slot.seq]
            if keep < len(slot.tokens) and not self.engine.forget(slot.seq, keep):
                keep = 0
            del slot.tokens[keep:]
            job.slot, job.n_past, job.cached = slot.seq, keep, keep
            job.pending = job.prompt[keep:]
            job.t_start = time.perf_counter()
            slot.job = job

    # -- the loop ------------------------------------------------------------------------------------

    def run(self, inbox: queue.Queue[Message | None]) -> None:
        """Serve messages from `inbox` until it yields None (stdin closed)."""
        while True:
            try:
                message = inbox.get(block=not self.busy)
                while True:
                    if message is None:
                        return
                    self.handle(message)
                    message = inbox.get_nowait()
            except queue.Empty:
                pass
            self.step()

    def step(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.rid in self.cancelled:
                self._finish(slot.job, "cancel")
        self._assign()
        active = [s.job for s in self.slots if s.job is not None]
        if not active:
            return
        engine = self.engine
        engine.clear_batch()
        for job in active:
            job.out_index = -1
            if not job.pending:
                job.out_index = engine.add(job.next_token, job.n_past, job.slot, True)
        room = engine.n_batch - engine.batch_size
        for job in active:
            if not job.pending or room <= 0:
                continue
            if len(job.pending) <= room:
                self._round_up_tail(job, room)
            chunk = job.pending[:room]
            last = len(chunk) == len(job.pending)
            for k, token in enumerate(chunk):
                index = engine.add(token, job.n_past + k, job.slot, last and k == len(chunk) - 1)
            if last:
                job.out_index = index
            job.n_past += len(chunk)
            self.slots[job.slot].tokens.extend(chunk)
            del job.pending[: len(chunk)]
            room -= len(chunk)
        code = engine.decode()
        if code != 0:
            for job in active:
                self._fail(job, f"llama_decode failed with code {code}")
            return
        for job in active:
            if job.out_index < 0:
                continue
            if job.next_token >= 0 and not job.pending and job.generated:
                self.slots[job.slot].tokens.append(job.next_token)
                job.n_past += 1
            self._take(job)
        now = time.perf_counter()
        # Text goes out at once for a job's first token, then in batches: every message costs the daemon and
        # the client a wake-up and a socket write, and on a small machine that time is taken from llama.cpp's
        # threads. The more streams share the model, the longer each waits (up to 4 intervals), so the
        # daemon's messages per second stay about the same however many streams there are.
        interval = self.stream_interval * min(len(active), MAX_INTERVAL_SCALE)
        for job in active:
            if self.slots[job.slot].job is job and (job.text or job.lps) and now - job.t_flushed >= interval:
                job.t_flushed = now
                self._flush(job)

    def _round_up_tail(self, job: Job, room: int) -> None:
        """Lengthen a short last prompt chunk with cached tokens evaluated again, where that is cheaper
        (`EngineLike.worth_a_tile`): the same tokens at the same positions, so the same cache."""
        engine = self.engine
        n_new = len(job.pending)
        # llama.cpp gives every sequence of a ubatch the same number of tokens: with other sequences in this
        # batch, one token of the tail goes with theirs and the rest forms its own ubatch.
        want = engine.tail_tile + (1 if engine.batch_size else 0)
        extra = want - n_new
        if extra <= 0 or extra > job.n_past or want > room or not engine.worth_a_tile(n_new, job.n_past):
            return
        slot = self.slots[job.slot]
        keep = job.n_past - extra
        if not engine.forget(slot.seq, keep):  # not expected (tail_tile is 0 for recurrent models): start over
            keep = 0
        job.pending[:0] = slot.tokens[keep:]
        del slot.tokens[keep:]
        job.n_past = keep
        job.cached = min(job.cached, keep)  # what is evaluated again is not counted as cached

    def _take(self, job: Job) -> None:
        engine = self.engine
        assert job.sampler is not None
        sampler = job.early if job.early is not None and len(job.generated) < job.min_tokens else job.sampler
        token = sampler.sample(engine, job.out_index)
        if not job.generated and not job.t_first:
            job.t_first = time.perf_counter()
        if engine.is_eog(token):
            self._finish(job, "stop")
            return
        job.generated.append(token)
        raw = engine.piece(token)
        if job.top_logprobs >= 0:
            chosen, top = engine.logprobs(job.out_index, token, job.top_logprobs)
            job.lps.append(
                {
                    "id": token,
                    "token": raw.decode("utf-8", "replace"),
                    "bytes": list(raw),
                    "logprob": chosen,
                    "top": [[t, engine.piece(t).decode("utf-8", "replace"), lp] for t, lp in top],
                }
            )
        text = job.held + job.decoder.decode(raw)
        keep = 0
        if job.stops:
            hit = _find_stop(text, job.stops)
            if hit is not None:
                job.held = ""
                if hit:
                    job.text.append(text[:hit])
                self._finish(job, "stop")
                return
            keep = _held_back(text, job.stops)
        if len(text) > keep:
            job.text.append(text[: len(text) - keep])
        job.held = text[len(text) - keep :] if keep else ""
        if len(job.generated) == job.num_predict or job.n_past + 1 >= engine.n_ctx_seq:
            self._finish(job, "length")
            return
        job.next_token = token

    def _flush(self, job: Job) -> None:
        message: Message = {"ev": "text", "id": job.rid, "text": "".join(job.text)}
        if job.lps:
            message["logprobs"] = job.lps
            job.lps = []
        job.text.clear()
        self.send(message)

    def _finish(self, job: Job, reason: str) -> None:
        tail = job.held + job.decoder.decode(b"", final=True)
        if tail:
            job.text.append(tail)
        if job.text or job.lps:
            self._flush(job)
        now = time.perf_counter()
        first = job.t_first or now
        self.send(
            {
                "ev": "done",
                "id": job.rid,
                "reason": reason,
                "prompt_eval_count": len(job.prompt) - job.cached,
                "prompt_eval_duration": int((first - job.t_start) * 1e9),
                "eval_count": len(job.generated),
                "eval_duration": int((now - first) * 1e9),
                "cached_tokens": job.cached,
                "context": job.prompt + job.generated,
                "truncated": job.truncated,
            }
        )
        self._release(job, self.slots[job.slot] if job.slot >= 0 else None)

    def _fail(self, job: Job, message: str) -> None:
        self.send({"ev": "error", "id": job.rid, "kind": "engine", "message": message})
        slot = self.slots[job.slot]
        self.engine.forget(slot.seq, 0)
        slot.tokens.clear()
        self._release(job, slot)

    def _release(self, job: Job, slot: Slot | None) -> None:
        for sampler in (job.sampler, job.early):
            if sampler is not None:
                sampler.close()
        job.sampler = job.early = None
        self.cancelled.discard(job.rid)
        if slot is not None and slot.job is job:
            slot.job = None
            slot.last_used = time.perf_counter()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could begin a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-n:]):
                longest = n
                break
    return longest
