"""The runner's decode loop: continuous batching over sequence slots, with a prompt cache per slot.

Every step puts the next token of each generating request and chunks of new prompts into one batch,
decodes it once, and samples each request with its own sampler chain. A request joins at the next step
and leaves without disturbing the others. A slot keeps the tokens whose KV it holds, so a new request
goes to the free slot sharing the longest prefix with it and evaluates only what follows (multi-turn
chats re-send their history). Beyond the slots, saved states (kvstates.py): before a slot is reused, what
it held is saved when worth it, and a prompt that a saved state begins better than any free slot gets that
state restored into its slot (for a model whose state cannot be cut back, a checkpoint: checkpoints.py).
The logits after each prompt are kept with its tokens (`PromptOutput`): the same prompt again takes its
first token from them and evaluates nothing. Output leaves as one message per request per step, and all of
a step's messages in one write (`flush`).

The loop talks to llama.cpp only through `Engine` (engine.py), so it can be driven by a fake in tests.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..domain.events import TokenLogprob
from . import checkpoints, detokenize, scripted
from .context import cut_to_fit
from .kvstates import BLOCK, KVStates, PromptOutput, Source
from .mediaprompt import MediaError, MediaPrompt, MediaSpan, Projector, media_prompt, snap, span_at, text_run
from .protocol import (
    STREAM_INTERVAL,
    CacheReport,
    Cancel,
    Detokenize,
    Embed,
    ErrorKind,
    Event,
    Failure,
    Finished,
    Job,
    Request,
    Rerank,
    Sampling,
    Scores,
    Text,
    Tokenize,
    TokenList,
    Vectors,
)
from .scripted import Script
from .speculate import DraftModel, NgramDraft, Speculation, draft_room
from .tokencache import TokenCache

log = logging.getLogger("localllm.runner")

MAX_INTERVAL_SCALE = 4  # with n streams generating, each waits up to min(n, 4) intervals between messages


class SamplerLike(Protocol):
    def sample(self, engine: Any, at: Any) -> int: ...  # `at`: an output of the last decode, or kept logits

    def close(self) -> None: ...


class EngineLike(Protocol):
    n_parallel: int
    n_batch: int
    n_ctx_seq: int
    n_vocab: int
    tail_tile: int  # 0: no rounding of prompt tails

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...
    def piece(self, token: int, *, special: bool = False) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def clear_batch(self) -> None: ...
    @property
    def batch_size(self) -> int: ...
    def add(self, token: int, pos: int, seq: int, logits: bool) -> int: ...
    def decode(self) -> int: ...
    def forget(self, seq: int, from_pos: int) -> bool: ...
    def worth_a_tile(self, n_new: int, n_past: int) -> bool: ...
    def ran_out_of_memory(self) -> bool: ...
    def logprobs(self, at: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]: ...
    def keep_logits(self, index: int) -> Any: ...
    def save_state(self, seq: int) -> bytearray | None: ...
    def load_state(self, seq: int, data: bytearray) -> bool: ...


def sampling_for(job: Job, grammar_for: Callable[[Any], str] | None = None) -> Sampling:
    """The job's sampling parameters, its `format` made a grammar through `grammar_for` (unless it has one)."""
    if job.format and not job.sampling.grammar and grammar_for is not None:
        return dataclasses.replace(job.sampling, grammar=grammar_for(job.format))
    return job.sampling


@dataclass(eq=False)
class Work:
    """A generation in progress."""

    rid: str
    prompt: list[int]
    sampler: SamplerLike | None = None
    early: SamplerLike | None = None  # used until `min_tokens` are generated: cannot end the answer
    truncated: int = 0  # prompt tokens cut out to fit the context
    min_tokens: int = 0
    num_predict: int = -1
    stops: tuple[str, ...] = ()
    top_logprobs: int = -1  # -1: no log-probabilities
    spec: Speculation = field(default_factory=Speculation)  # its drafted tokens (speculate.py)
    # progress
    slot: int = -1
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    n_past: int = 0  # tokens of this sequence in the cache
    cached: int = 0
    next_token: int = -1  # sampled, not yet evaluated
    out_index: int = -1  # where this request's logits are in the current batch
    first: Any = None  # kept logits its first token is taken from (its whole prompt was cached with them)
    checkpointed: int = 0  # where its prompt's last checkpoint was taken (checkpoints.py)
    generated: list[int] = field(default_factory=list)
    held: str = ""  # text held back: it may begin a stop string
    text: list[str] = field(default_factory=list)  # to send after this step
    lps: list[TokenLogprob] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    t_start: float = 0.0
    t_first: float = 0.0
    t_flushed: float = 0.0  # when text last went out
    spans: tuple[MediaSpan, ...] = ()  # the prompt's media chunks (mediaprompt.py): their positions hold pseudo ids
    media_turn: int = 0  # when its last media chunk was evaluated (Batcher._turns): requests take turns


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's cache holds
    work: Work | None = None
    last_used: float = 0.0
    output: PromptOutput | None = None  # the output after the first `output.n` of `tokens`


class Batcher:
    def __init__(
        self,
        engine: EngineLike,
        send: Callable[[str | None, Event], None],
        make_sampler: Callable[[Sampling], SamplerLike],
        grammar_for: Callable[[Any], str] | None = None,
        embed: Callable[[Embed | Rerank], Vectors | Scores | Failure] | None = None,
        stream_interval: float = STREAM_INTERVAL,
        states: KVStates | None = None,
        flush: Callable[[], None] = lambda: None,
        script: Script | None = None,
        projector: Projector | None = None,
        draft: DraftModel | None = None,
        speculate: bool = True,
    ) -> None:
        self.engine = engine
        self.projector = projector  # the model's multimodal projector (multimodal.py), if it has one
        self._turns = 0  # media chunks evaluated
        self.draft = draft  # the draft model (a Modelfile's DRAFT), None: none
        self.speculate = speculate  # False: this model's cache cannot drop a rejected draft (recurrent)
        self.script = script  # tests only (scripted.py): answers written by a test instead of sampling
        self.stream_interval = stream_interval
        self.grammar_for = grammar_for
        # answers an `Embed` or `Rerank` request (embedding.answer, rerank.answer), between decode steps
        self.embed = embed
        self.send = send  # an event for the request of that id (None: about the runner)
        # writes out what `send` was given (main.Channel holds events, so that what one pass of the loop says
        # leaves as one write: one wake-up of the daemon, not one per event)
        self.flush = flush
        self._report_due = False  # the prompt cache's figures changed: a `CacheReport` goes out after the step
        self.states = states  # saved KV states beyond the slots (None: only the slots')
        self.make_sampler = make_sampler
        self.slots = [Slot(i) for i in range(engine.n_parallel)]
        self.prompts = TokenCache(lambda text, add_bos: engine.tokenize(text, add_bos=add_bos))
        self.waiting: collections.deque[Work] = collections.deque()
        self.cancelled: set[str] = set()
        self._checkpoint_next: list[Slot] = []  # slots whose sequence holds just a prompt (checkpoints.py)

    # -- requests ------------------------------------------------------------------------------------

    def handle(self, rid: str, request: Request) -> None:
        if isinstance(request, Cancel):
            self._cancel(rid)
        elif isinstance(request, Tokenize):
            tokens = self.engine.tokenize(request.text, add_bos=request.add_bos)
            # with `pieces`, each token's bytes, for offsets and token texts
            pieces = tuple(self.engine.piece(t) for t in tokens) if request.pieces else None
            self.send(rid, TokenList(tuple(tokens), pieces))
        elif isinstance(request, Job):
            self._submit(rid, request)
        elif isinstance(request, Detokenize):
            self.send(rid, detokenize.answer(self.engine, request))
        elif self.embed is None:
            self.send(rid, Failure("request", "this runner computes no embeddings"))
        else:
            self.send(rid, self.embed(request))

    def _cancel(self, rid: str) -> None:
        """Stop the generation `rid`: one waiting for a slot ends now, one in a slot at the next step; either way
        it is answered (Finished "cancel"), so the daemon knows the runner is done with it. A request already
        answered is left alone."""
        for work in self.waiting:
            if work.rid == rid:
                self.waiting.remove(work)
                self._release(work, None)
                self.send(rid, Finished("cancel"))
                return
        if any(slot.work is not None and slot.work.rid == rid for slot in self.slots):
            self.cancelled.add(rid)

    def _submit(self, rid: str, job: Job) -> None:
        if self.script is not None and not job.media and self._scripted(rid, job):
            return
        n_vocab = self.engine.n_vocab
        bad = next((t for t in job.context if not 0 <= t < n_vocab), None)
        if bad is not None:  # (llama_decode would refuse the whole step's batch, failing every request in it)
            message = f"context holds {bad}, which is not a token of this model (0 to {n_vocab - 1})"
            self.send(rid, Failure("request", message))
            return
        spans: tuple[MediaSpan, ...] = ()
        if job.media:
            made = self._media_prompt(rid, job)
            if made is None:
                return
            prompt, spans = made.tokens, made.spans
        elif job.context:  # an earlier exchange's tokens, then the new text (no second BOS)
            prompt = list(job.context) + self.prompts.tokens(job.prompt, False)
        else:
            prompt = self.prompts.tokens(job.prompt, True)
        n_ctx = self.engine.n_ctx_seq
        truncated = 0
        if len(prompt) >= n_ctx and job.truncate and not spans:  # (a media prompt is not cut: its chunks are whole)
            prompt, truncated = cut_to_fit(prompt, n_ctx, job.num_predict)
        if len(prompt) >= n_ctx:
            self._drop(spans)
            message = f"the input is {len(prompt)} tokens, longer than the context window of {n_ctx}"
            self.send(rid, Failure("context", message, n_tokens=len(prompt), n_ctx=n_ctx))
            return
        if job.num_predict == 0:
            self._drop(spans)
            self.send(rid, Finished("length", context=() if spans else tuple(prompt)))
            return
        work = Work(
            rid,
            prompt,
            num_predict=job.num_predict,
            stops=tuple(s for s in job.stop if s),
            top_logprobs=job.logprobs if job.logprobs is not None else -1,
            truncated=truncated,
            min_tokens=job.min_tokens,
            spans=spans,
        )
        # (the draft model has no projector: it cannot follow a prompt with media, so such a prompt only looks up)
        drafter = self.draft is not None and not spans
        if self.speculate and job.num_draft > 0 and (job.draft_ngram or drafter):
            work.spec = Speculation(job.draft_ngram, drafter, job.num_draft)
            work.spec.lookup = NgramDraft() if job.draft_ngram else None
        try:
            params = sampling_for(job, self.grammar_for)
            work.sampler = self.make_sampler(params)
            if work.min_tokens > 0 and not params.ignore_eos:
                work.early = self.make_sampler(dataclasses.replace(params, ignore_eos=True))
        except Exception as exc:  # a grammar llama.cpp refuses, a schema its converter cannot take (it asserts)
            if work.sampler is not None:
                work.sampler.close()
            self._drop(spans)
            self.send(rid, Failure("request", str(exc)))
            return
        self.waiting.append(work)

    def _media_prompt(self, rid: str, job: Job) -> MediaPrompt | None:
        """The prompt's tokens and media spans; None when refused (a `Failure` naming the item was sent)."""
        try:
            return media_prompt(self.projector, job.prompt, job.media, job.context)
        except MediaError as exc:
            self.send(rid, Failure("request", str(exc)))
            return None

    def _drop(self, spans: tuple[MediaSpan, ...]) -> None:
        if spans and self.projector is not None:
            self.projector.release(spans)

    def _scripted(self, rid: str, job: Job) -> bool:
        """Answer `job` from the test's script (scripted.py) when a rule matches its prompt: the text in pieces,
        then the end, with the prompt's real token count."""
        assert self.script is not None
        output = self.script.output_for(job.prompt)
        if output is None:
            return False
        prompt = list(job.context) + self.prompts.tokens(job.prompt, not job.context)
        for piece in scripted.pieces(output):
            self.send(rid, Text(piece))
            self.flush()  # each piece its own write, a moment apart: the daemon reads a stream of pieces
        generated = len(self.engine.tokenize(output, add_bos=False)) if output else 0
        self.send(rid, Finished("stop", prompt_eval_count=len(prompt), eval_count=generated, context=tuple(prompt)))
        return True

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or any(s.work is not None for s in self.slots)

    def _assign(self) -> None:
        while self.waiting:
            free = [s for s in self.slots if s.work is None]
            if not free:
                return
            work = self.waiting.popleft()
            # The slot whose cache holds the longest prefix of this prompt, if reusing it keeps at least half of
            # what it holds; else the least recently used slot (an empty one first). So a prompt that shares
            # only a BOS with a conversation's slot leaves that conversation's cache alone.
            # (never inside a media chunk: `snap` moves a cut to its start)
            reuse = {
                s.seq: snap(work.spans, min(_common_prefix(s.tokens, work.prompt), len(work.prompt) - 1)) for s in free
            }
            good = [s for s in free if reuse[s.seq] > 0 and 2 * reuse[s.seq] >= len(s.tokens)]
            if good:
                slot = max(good, key=lambda s: (reuse[s.seq], -s.last_used))
            else:
                slot = min(free, key=lambda s: s.last_used)
            work.t_start = time.perf_counter()
            keep, source = self._reuse(slot, work, reuse[slot.seq])
            output = _output_for(slot, work.prompt)
            if output is not None:  # nothing to evaluate, not even the prompt's last token again
                keep = len(work.prompt)
            if keep < len(slot.tokens) and not self.engine.forget(slot.seq, keep):
                keep, source, output = 0, "none", None
            self._cut(slot, keep)
            work.slot, work.n_past, work.cached, work.checkpointed = slot.seq, keep, keep, keep
            work.pending = work.prompt[keep:]
            work.first = output.logits if output is not None else None
            slot.work = work
            if self.states is not None:
                self.states.note(source, keep, len(work.prompt))
                self._report_due = True

    def _reuse(self, slot: Slot, work: Work, keep: int) -> tuple[int, Source]:
        """How much of `work.prompt` `slot` holds once it takes it, and from where: the `keep` tokens it holds
        already, or more from a saved state restored into it (kvstates.py). What the slot loses is saved
        first, when that is worth it."""
        states, prompt = self.states, work.prompt
        if states is None:
            return keep, "slot"
        if states.exact:
            return self._reuse_checkpoint(slot, prompt, keep)
        state, n = states.find(prompt)
        n = snap(work.spans, min(n, len(prompt) - 1))
        if state is None or n < keep + BLOCK:  # restore only for a block or more beyond what the slot holds
            self._save(slot, keep)
            return keep, "slot" if keep else "none"
        self._save(slot, 0)
        self._cut(slot, 0)
        source, output = states.restore(self.engine, slot.seq, state)
        if source == "none":
            return 0, source
        slot.tokens.extend(state.tokens)
        slot.output = output
        return n, source

    def _reuse_checkpoint(self, slot: Slot, prompt: list[int], keep: int) -> tuple[int, Source]:
        """`_reuse` for a model whose state cannot be cut back: the slot as it is, or cut if the engine can, or
        the checkpoint restoring the most (checkpoints.choose); the slot then holds exactly what is kept."""
        assert self.states is not None
        if _output_for(slot, prompt) is not None:
            keep = len(prompt)
        state, n = self.states.find(prompt)
        plan = checkpoints.choose(len(slot.tokens), keep, n, BLOCK)
        if plan == "slot":
            return keep, "slot" if keep else "none"
        self._save(slot, keep if plan == "cut" else 0)
        if plan == "cut" and self.engine.forget(slot.seq, keep):
            self._cut(slot, keep)
            return keep, "slot"
        self.engine.forget(slot.seq, 0)
        self._cut(slot, 0)
        if state is None:
            return 0, "none"
        source, output = self.states.restore(self.engine, slot.seq, state)
        if source == "none":
            return 0, source
        slot.tokens.extend(state.tokens)
        slot.output = output
        return n, source

    def _checkpoint(self, slot: Slot) -> None:
        """Keep what `slot` holds now as a checkpoint (a model whose state cannot be cut back: checkpoints.py)."""
        states = self.states
        if states is None or not states.exact or not states.wants(slot.tokens, slot.output):
            return
        data = self.engine.save_state(slot.seq)
        if data is not None and states.save(slot.tokens, data, slot.output) is not None:
            self._report_due = True

    def _save(self, slot: Slot, keep: int) -> None:
        """Save what `slot` holds before it is cut to `keep` tokens, if a block or more would be lost."""
        states = self.states
        if states is None or len(slot.tokens) - keep < BLOCK or not states.wants(slot.tokens, slot.output):
            return
        data = self.engine.save_state(slot.seq)
        if data is not None:
            states.save(slot.tokens, data, slot.output)

    def _cut(self, slot: Slot, keep: int) -> None:
        """`slot` holds its first `keep` tokens only (its sequence was cut there)."""
        del slot.tokens[keep:]
        if slot.output is not None and slot.output.n > keep:
            slot.output = None

    # -- the loop ------------------------------------------------------------------------------------

    def run(self, take: Callable[[bool], list[tuple[str, Request]] | None]) -> None:
        """Serve the requests `take` gives (the ones that came in; waiting for some with True, when there is
        nothing to do) until it gives None (stdin closed)."""
        while True:
            requests = take(not self.busy)
            if requests is None:
                self.flush()
                self.close()
                return
            for request in requests:
                self.handle(*request)
            self.flush()  # answers to tokenize, embed, ... go out before a long step
            self.step()
            self.flush()

    def close(self) -> None:
        """With a disk tier, save what the slots hold (a restart finds it); finish the state files' writes."""
        if self.states is None:
            return
        if self.states.files is not None:
            for slot in self.slots:
                if slot.work is None:
                    self._save(slot, 0)
        self.states.close()

    def step(self) -> None:
        self._step()
        if self._report_due and self.states is not None:
            # After the step's text, not before its decode: the daemon, woken to read it, would take a core
            # from llama.cpp's threads in the middle of the decode that gives a new request its first token.
            self._report_due = False
            self.send(None, CacheReport(**vars(self.states.stats())))

    def _step(self) -> None:
        for slot in self._checkpoint_next:  # before anything is decoded after their prompts
            self._checkpoint(slot)
        self._checkpoint_next.clear()
        for slot in self.slots:
            if slot.work is not None and slot.work.rid in self.cancelled:
                self._finish(slot.work, "cancel")
        self._assign()
        active = [s.work for s in self.slots if s.work is not None]
        if any(work.first is not None for work in active):
            self._take_kept(active)
            active = [s.work for s in self.slots if s.work is not None]
        if not active:
            return
        if self.projector is not None and any(w.pending and w.pending[0] < 0 for w in active):
            self._evaluate_media(active)
            active = [s.work for s in self.slots if s.work is not None]
        engine = self.engine
        engine.clear_batch()
        self._draft(active)
        for work in active:
            work.out_index = -1
            if not work.pending:
                work.out_index = engine.add(work.next_token, work.n_past, work.slot, True)
                for k, token in enumerate(work.spec.draft):  # each drafted position's output follows
                    engine.add(token, work.n_past + 1 + k, work.slot, True)
                work.spec.drafted += len(work.spec.draft)
        room = engine.n_batch - engine.batch_size
        for work in active:
            if not work.pending or room <= 0:
                continue
            if len(work.pending) <= room and text_run(work.pending, room) == len(work.pending):
                self._round_up_tail(work, room)
            size = room
            if self.states is not None and self.states.exact and self.states.enabled:  # to where a checkpoint is due
                size = checkpoints.chunk(work.n_past, len(work.prompt), room, engine.n_batch)
            n = text_run(work.pending, size)  # text up to the next media chunk (evaluated in a later step)
            if n == 0:
                continue
            chunk = work.pending[:n]
            # the last prompt token's output gives the first token (not for an answer's tokens evaluated again)
            last = len(chunk) == len(work.pending) and not work.generated
            for k, token in enumerate(chunk):
                index = engine.add(token, work.n_past + k, work.slot, last and k == len(chunk) - 1)
            if last:
                work.out_index = index
            work.n_past += len(chunk)
            self.slots[work.slot].tokens.extend(chunk)
            del work.pending[: len(chunk)]
            room -= len(chunk)
        if engine.batch_size == 0:  # only a media chunk this step
            return
        code = engine.decode()
        if code != 0:
            for work in active:
                self._fail(work, f"llama_decode failed with code {code}")
            return
        for work in active:
            if work.pending and checkpoints.due(work.n_past, work.checkpointed, len(work.prompt), engine.n_batch):
                work.checkpointed = work.n_past  # a long prompt's chunk boundary
                self._checkpoint(self.slots[work.slot])
            if work.out_index < 0:
                continue
            if work.next_token >= 0 and not work.pending and work.generated:
                self.slots[work.slot].tokens.append(work.next_token)
                work.n_past += 1
            if work.spec.draft:
                self._verify(work)
            else:
                self._take(work)
        now = time.perf_counter()
        # Text goes out at once for a job's first token, then in batches: every message costs the daemon and
        # the client a wake-up and a socket write, and on a small machine that time is taken from llama.cpp's
        # threads. The more streams share the model, the longer each waits (up to 4 intervals), so the
        # daemon's messages per second stay about the same however many streams there are.
        interval = self.stream_interval * min(len(active), MAX_INTERVAL_SCALE)
        for work in active:
            if self.slots[work.slot].work is work and (work.text or work.lps) and now - work.t_flushed >= interval:
                work.t_flushed = now
                self._flush(work)

    def _evaluate_media(self, active: list[Work]) -> None:
        """Evaluate one media chunk: a step holds at most one chunk's evaluation (the encoder and the decode of
        its embeddings), so the other requests wait no longer than that, and their text still goes in this step's
        batch. Requests whose prompts go on with a chunk take turns: the one whose last chunk was longest ago
        (then the oldest) goes first."""
        assert self.projector is not None
        work = min((w for w in active if w.pending and w.pending[0] < 0), key=lambda w: (w.media_turn, w.t_start))
        self._turns += 1
        work.media_turn = self._turns
        span = span_at(work.spans, work.n_past)
        if span is None:  # not expected: a cut is never inside a chunk
            self._fail(work, "a media chunk was cut")
            return
        code = self.projector.evaluate(span, work.n_past, work.slot)
        if code != 0:
            self._fail(work, f"{span.source}: llama.cpp failed to evaluate it (code {code})")
            return
        self.slots[work.slot].tokens.extend(work.pending[: span.n])
        work.n_past += span.n
        del work.pending[: span.n]  # (text follows: a prompt never ends with a media chunk)

    def _take_kept(self, active: list[Work]) -> None:
        """The first token of each request whose whole prompt was cached with the logits after it: sampled from
        those, and sent at once, before this step's decode (which evaluates that token)."""
        for work in active:
            if work.first is None:
                continue
            self._take(work)
            if self.slots[work.slot].work is work and (work.text or work.lps):
                work.t_flushed = time.perf_counter()
                self._flush(work)
        self.flush()

    def _round_up_tail(self, work: Work, room: int) -> None:
        """Lengthen a short last prompt chunk with cached tokens evaluated again, where that is cheaper
        (`EngineLike.worth_a_tile`): the same tokens at the same positions, so the same cache."""
        engine = self.engine
        n_new = len(work.pending)
        # llama.cpp gives every sequence of a ubatch the same number of tokens: with other sequences in this
        # batch, one token of the tail goes with theirs and the rest forms its own ubatch.
        want = engine.tail_tile + (1 if engine.batch_size else 0)
        extra = want - n_new
        if extra <= 0 or extra > work.n_past or want > room or not engine.worth_a_tile(n_new, work.n_past):
            return
        slot = self.slots[work.slot]
        keep = work.n_past - extra
        if work.spans and text_run(slot.tokens[keep : work.n_past], extra) < extra:
            return  # a media chunk is never evaluated again in part, nor as text
        if not engine.forget(slot.seq, keep):  # not expected (tail_tile is 0 where cuts fail): start over
            keep = 0
        work.pending[:0] = slot.tokens[keep:]
        self._cut(slot, keep)
        work.n_past = keep
        work.cached = min(work.cached, keep)  # what is evaluated again is not counted as cached

    def _draft(self, active: list[Work]) -> None:
        """The drafts of the generating requests that speculate, staged after their next token: at most their
        share of the batch's room (the requests still evaluating a prompt get theirs), and what
        `speculate.draft_room` allows."""
        engine = self.engine
        drafting = [w for w in active if w.spec.on and not w.pending and w.next_token >= 0]
        if not drafting:
            return
        generating = sum(1 for w in active if not w.pending)
        share = (engine.n_batch - generating) // len(active)
        wanted: list[tuple[Work, list[int], int]] = []
        for work in drafting:
            n = draft_room(
                work.spec,
                generated=len(work.generated),
                num_predict=work.num_predict,
                n_past=work.n_past,
                n_ctx=engine.n_ctx_seq,
                share=share,
            )
            if n <= 0:
                continue
            history = work.prompt + work.generated  # the last is the next token, staged already
            if work.spec.lookup is not None:
                work.spec.draft = work.spec.lookup.draft(history, n)
            if not work.spec.draft and work.spec.model:
                wanted.append((work, history, n))
        if wanted and self.draft is not None:
            drafts = self.draft.draft([(w.slot, history, n) for w, history, n in wanted])
            for (work, _, _), draft in zip(wanted, drafts, strict=True):
                work.spec.draft = draft

    def _verify(self, work: Work) -> None:
        """Take the tokens of a request whose draft was staged after its next token: at each drafted position
        the token its sampler picks from the target's output there; while that is the drafted token the next
        position's output holds, else it is the step's last token (speculate.py: the rejection rule). The
        rejected tail's KV is removed."""
        slot = self.slots[work.slot]
        drafted, work.spec.draft = work.spec.draft, []
        kept = 0
        for token in drafted:
            picked = self._sample(work)
            if picked == token:
                kept += 1
                work.spec.accepted += 1
            self._emit(work, picked, work.out_index)
            if slot.work is not work or picked != token:
                break
            slot.tokens.append(token)  # its KV, from this batch, is the sequence's
            work.n_past += 1
            work.out_index += 1
        else:
            self._take(work)
        work.spec.verified(len(drafted), kept)
        if kept < len(drafted) and not self.engine.forget(slot.seq, len(slot.tokens)):
            self._cut(slot, 0)  # the cache could not drop the tail alone (a sliding window): evaluated again
            if slot.work is work:
                work.pending = work.prompt + work.generated[:-1]
                work.n_past = 0

    def _take(self, work: Work) -> None:
        at = work.out_index if work.first is None else work.first
        token = self._sample(work)
        self._emit(work, token, at)

    def _sample(self, work: Work) -> int:
        engine = self.engine
        assert work.sampler is not None
        sampler = work.early if work.early is not None and len(work.generated) < work.min_tokens else work.sampler
        at = work.out_index if work.first is None else work.first
        if not work.generated and work.first is None:  # the output after the whole prompt: kept for a repeat
            logits = engine.keep_logits(at)
            slot = self.slots[work.slot]
            slot.output = PromptOutput(work.n_past, logits, memoryview(logits).nbytes)
            if self.states is not None and self.states.exact:  # a checkpoint, once the first token is out
                self._checkpoint_next.append(slot)
        work.first = None
        return sampler.sample(engine, at)

    def _emit(self, work: Work, token: int, at: Any) -> None:
        """`token`, picked from output `at`: the end, or text (held back while it may begin a stop string)."""
        engine = self.engine
        if not work.generated and not work.t_first:
            work.t_first = time.perf_counter()
        if engine.is_eog(token):
            self._finish(work, "stop")
            return
        work.generated.append(token)
        raw = engine.piece(token)
        if work.top_logprobs >= 0:
            chosen, top = engine.logprobs(at, token, work.top_logprobs)
            alternatives = tuple((t, engine.piece(t).decode("utf-8", "replace"), lp) for t, lp in top)
            work.lps.append(TokenLogprob(token, raw.decode("utf-8", "replace"), tuple(raw), chosen, alternatives))
        text = work.held + work.decoder.decode(raw)
        keep = 0
        if work.stops:
            hit = _find_stop(text, work.stops)
            if hit is not None:
                work.held = ""
                if hit:
                    work.text.append(text[:hit])
                self._finish(work, "stop", stop=next(s for s in work.stops if text.startswith(s, hit)))
                return
            keep = _held_back(text, work.stops)
        if len(text) > keep:
            work.text.append(text[: len(text) - keep])
        work.held = text[len(text) - keep :] if keep else ""
        if len(work.generated) == work.num_predict or work.n_past + 1 >= engine.n_ctx_seq:
            self._finish(work, "length")
            return
        work.next_token = token

    def _flush(self, work: Work) -> None:
        text = Text("".join(work.text), tuple(work.lps)) if work.lps else Text("".join(work.text))
        work.lps.clear()
        work.text.clear()
        self.send(work.rid, text)

    def _finish(self, work: Work, reason: str, *, stop: str | None = None) -> None:
        """End `work`; `stop` is the stop sequence that ended it, when one did."""
        tail = work.held + work.decoder.decode(b"", final=True)
        if tail:
            work.text.append(tail)
        if work.text or work.lps:
            self._flush(work)
        now = time.perf_counter()
        first = work.t_first or now
        finished = Finished(
            reason,
            prompt_eval_count=len(work.prompt) - work.cached,
            prompt_eval_duration=int((first - work.t_start) * 1e9),
            eval_count=len(work.generated),
            eval_duration=int((now - first) * 1e9),
            # a media prompt's pseudo ids are no tokens a client could send back: no context for it
            context=() if work.spans else (*work.prompt, *work.generated),
            cached_tokens=work.cached,
            truncated=work.truncated,
            stop_sequence=stop,
            draft_count=work.spec.drafted,
            draft_accepted=work.spec.accepted,
        )
        self.send(work.rid, finished)
        self._release(work, self.slots[work.slot] if work.slot >= 0 else None)

    def _fail(self, work: Work, message: str) -> None:
        kind: ErrorKind = "out_of_memory" if self.engine.ran_out_of_memory() else "engine"
        self.send(work.rid, Failure(kind, message))
        slot = self.slots[work.slot]
        self.engine.forget(slot.seq, 0)
        self._cut(slot, 0)
        self._release(work, slot)

    def _release(self, work: Work, slot: Slot | None) -> None:
        for sampler in (work.sampler, work.early):
            if sampler is not None:
                sampler.close()
        work.sampler = work.early = None
        self._drop(work.spans)
        work.spans = ()
        self.cancelled.discard(work.rid)
        if slot is not None and slot.work is work:
            slot.work = None
            slot.last_used = time.perf_counter()


def _output_for(slot: Slot, prompt: list[int]) -> PromptOutput | None:
    """The output `slot` kept after exactly `prompt`, if it holds `prompt` whole and kept the output after it."""
    output = slot.output
    if output is None or output.n != len(prompt) or len(slot.tokens) < output.n or slot.tokens[: output.n] != prompt:
        return None
    return output


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` begin with in common: slices compared in C, halving the span where they first
    differ (a token-by-token loop over a 1,000-token prompt and four slots took half a millisecond)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], and they differ before `high`
    while high - low > 16:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    while a[low] == b[low]:
        low += 1
    return low


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
