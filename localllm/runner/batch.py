"""The runner's decode loop: continuous batching over sequence slots, with a prompt cache per slot.

Every step puts the next token of each generating request and chunks of new prompts into one batch,
decodes it once, and samples each request with its own sampler chain. A request joins at the next step
and leaves without disturbing the others. What a slot and a generation hold is in slots.py. A new request
goes to the free slot whose cache holds the most of its prompt, or gets a saved state (kvstates.py) or a
checkpoint (checkpoints.py) restored into it, and evaluates only what follows (slotcache.py). The logits after
each prompt are kept with its tokens (`PromptOutput`): the same prompt again takes its first token from them
and evaluates nothing. A prompt's media chunks are evaluated one per step (mediastep.py), and the drafts of
requests that speculate are staged in the step's batch and verified against its outputs (drafts.py). Output
leaves as one message per request per step, and all of a step's messages in one write (`flush`).

The loop talks to llama.cpp only through `EngineLike` (slots.py; engine.py's `Engine` offers it), so it can be
driven by a fake in tests.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from ..domain.events import TokenLogprob
from . import checkpoints, detokenize, drafts, scripted
from .context import cut_to_fit
from .draftpolicy import StepCosts
from .kvstates import KVStates, PromptOutput
from .mediaprompt import MediaError, MediaPrompt, MediaSpan, Projector, media_prompt, text_run
from .mediastep import MediaTurns
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
from .slotcache import SlotCache
from .slots import EngineLike, SamplerLike, Slot, Work
from .speculate import DraftModel, LookupMemory, NgramDraft, Speculation
from .stopstrings import find_stop, held_back
from .tokencache import TokenCache

__all__ = ["Batcher", "EngineLike", "SamplerLike", "sampling_for"]

log = logging.getLogger("localllm.runner")

MAX_INTERVAL_SCALE = 4  # with n streams generating, each waits up to min(n, 4) intervals between messages


def sampling_for(job: Job, grammar_for: Callable[[Any], str] | None = None) -> Sampling:
    """The job's sampling parameters, its `format` made a grammar through `grammar_for` (unless it has one)."""
    if job.format and not job.sampling.grammar and grammar_for is not None:
        return dataclasses.replace(job.sampling, grammar=grammar_for(job.format))
    return job.sampling


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
        costs: StepCosts | None = None,
    ) -> None:
        self.engine = engine
        self.costs = costs or StepCosts()  # decode steps' times by size: how long a draft pays (draftpolicy.py)
        self.lookup_memory = LookupMemory()  # earlier requests' histories, for prompt lookups (speculate.py)
        self.projector = projector  # the model's multimodal projector (multimodal.py), if it has one
        self.media = MediaTurns(projector) if projector is not None else None  # whose media chunk a step evaluates
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
        self.states = states  # saved KV states beyond the slots (None: only the slots')
        self.make_sampler = make_sampler
        self.slots = [Slot(i) for i in range(engine.n_parallel)]
        self.cache = SlotCache(engine, self.slots, states)  # which slot a request goes to, what it holds (slotcache.py)
        self.prompts = TokenCache(lambda text, add_bos: engine.tokenize(text, add_bos=add_bos))
        self.waiting: collections.deque[Work] = collections.deque()
        self.cancelled: set[str] = set()
        self._checkpoint_next: list[Slot] = []  # slots whose sequence holds just a prompt (checkpoints.py)

    # -- requests ------------------------------------------------------------------------------------

    def handle(self, rid: str, request: Request) -> None:
        if isinstance(request, Cancel):
            self._cancel(rid)
        elif isinstance(request, Tokenize):
            self._tokenize(rid, request)
        elif isinstance(request, Job):
            self._submit(rid, request)
        elif isinstance(request, Detokenize):
            self.send(rid, detokenize.answer(self.engine, request))
        elif self.embed is None:
            self.send(rid, Failure("request", "this runner computes no embeddings"))
        else:
            self.send(rid, self.embed(request))

    def _tokenize(self, rid: str, request: Tokenize) -> None:
        if request.media:  # the prompt as `_submit` lays it out: the same code, so the count is the evaluation's
            made = self._media_prompt(rid, Job(request.text, media=request.media))
            if made is not None:
                self._drop(made.spans)
                self.send(rid, TokenList(tuple(made.tokens)))
            return
        tokens = self.engine.tokenize(request.text, add_bos=request.add_bos)
        # with `pieces`, each token's bytes, for offsets and token texts
        pieces = tuple(self.engine.piece(t) for t in tokens) if request.pieces else None
        self.send(rid, TokenList(tuple(tokens), pieces))

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
            work.spec.lookup = NgramDraft(self.lookup_memory) if job.draft_ngram else None
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
                    self.cache.save(slot, 0)
        self.states.close()

    def step(self) -> None:
        self._step()
        if self.cache.report_due and self.states is not None:
            # After the step's text, not before its decode: the daemon, woken to read it, would take a core
            # from llama.cpp's threads in the middle of the decode that gives a new request its first token.
            self.cache.report_due = False
            self.send(None, CacheReport(**vars(self.states.stats())))

    def _step(self) -> None:
        for slot in self._checkpoint_next:  # before anything is decoded after their prompts
            self.cache.checkpoint(slot)
        self._checkpoint_next.clear()
        for slot in self.slots:
            if slot.work is not None and slot.work.rid in self.cancelled:
                self._finish(slot.work, "cancel")
        self.cache.assign(self.waiting)
        active = [s.work for s in self.slots if s.work is not None]
        if any(work.first is not None for work in active):
            self._take_kept(active)
            active = [s.work for s in self.slots if s.work is not None]
        if not active:
            return
        if self.media is not None and any(w.pending and w.pending[0] < 0 for w in active):
            failed = self.media.evaluate(active, self.slots)
            if failed is not None:
                self._fail(*failed)
            active = [s.work for s in self.slots if s.work is not None]
        engine = self.engine
        engine.clear_batch()
        drafts.stage(active, engine, self.draft, self.costs)
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
        n_step, t_step = engine.batch_size, time.perf_counter()
        code = engine.decode()
        if code != 0:
            for work in active:
                self._fail(work, f"llama_decode failed with code {code}")
            return
        for work in active:
            if work.pending and checkpoints.due(work.n_past, work.checkpointed, len(work.prompt), engine.n_batch):
                work.checkpointed = work.n_past  # a long prompt's chunk boundary
                self.cache.checkpoint(self.slots[work.slot])
            if work.out_index < 0:
                continue
            if work.next_token >= 0 and not work.pending and work.generated:
                self.slots[work.slot].tokens.append(work.next_token)
                work.n_past += 1
            if work.spec.draft:
                drafts.verify(work, self.slots[work.slot], engine, self._sample, self._emit, self._take)
            else:
                self._take(work)
        now = time.perf_counter()
        self.costs.record(n_step, now - t_step)  # the decode and its positions sampled (GPUs sync on reading them)
        # Text goes out at once for a job's first token, then in batches: every message costs the daemon and
        # the client a wake-up and a socket write, and on a small machine that time is taken from llama.cpp's
        # threads. The more streams share the model, the longer each waits (up to 4 intervals), so the
        # daemon's messages per second stay about the same however many streams there are.
        interval = self.stream_interval * min(len(active), MAX_INTERVAL_SCALE)
        for work in active:
            if self.slots[work.slot].work is work and (work.text or work.lps) and now - work.t_flushed >= interval:
                work.t_flushed = now
                self._flush(work)

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
        if not engine.cuttable(slot.seq, keep):
            return  # a checkpoint restored whole (a sliding window's, even with swa_full): evaluate the tail as it is
        if not engine.forget(slot.seq, keep):  # not expected (`cuttable` said it could be): start over
            keep = 0
        work.pending[:0] = slot.tokens[keep:]
        slot.cut(keep)
        work.n_past = keep
        work.cached = min(work.cached, keep)  # what is evaluated again is not counted as cached

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
            hit = find_stop(text, work.stops)
            if hit is not None:
                work.held = ""
                if hit:
                    work.text.append(text[:hit])
                self._finish(work, "stop", stop=next(s for s in work.stops if text.startswith(s, hit)))
                return
            keep = held_back(text, work.stops)
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
        if work.spec.lookup is not None:
            self.lookup_memory.add(work.prompt + work.generated)
        self._release(work, self.slots[work.slot] if work.slot >= 0 else None)

    def _fail(self, work: Work, message: str) -> None:
        kind: ErrorKind = "out_of_memory" if self.engine.ran_out_of_memory() else "engine"
        self.send(work.rid, Failure(kind, message))
        slot = self.slots[work.slot]
        self.engine.forget(slot.seq, 0)
        slot.cut(0)
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
