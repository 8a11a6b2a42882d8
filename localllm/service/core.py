"""The use cases behind every API dialect: generate, chat, embed, pull, list, show, copy, delete, ps.

Routes parse their wire format into the request types of `generation` (`GenerateRequest`, `ChatRequest`),
call the service, and encode what it yields: typed events (`types.Event`: text pieces, tool calls, then
`Done` with the timings and counts), or one whole `Answer` (`generation.collect`). Tool calls are held back
and parsed here, once for every dialect. The service resolves names in the store (never pulling on its own),
merges options (request > model parameters > defaults), renders prompts (`templates`) and drives the
scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from ..auth import quota
from ..chat import prompt, thinking
from ..chat.formats import stream
from ..chat.formats.grammar import call_syntax, syntax_of
from ..chat.renderpool import Renderer, TemplateSource
from ..chat.tools import chosen_tools, held_back, new_call_id
from ..config import Settings
from ..domain import limits
from ..domain.errors import ContextLengthExceeded, InvalidRequest
from ..domain.events import Done, Embeddings, Event, Progress, Ranking, Token
from ..domain.media import Media
from ..domain.messages import ChatMessage, Tool
from ..domain.names import ModelName, parse_name
from ..domain.options import LOAD_OPTIONS, CallSyntax, Constraints, Options, bounded
from ..modelstore.models import DamagedModel, Model, diagnose, read_model
from ..modelstore.store import Store
from ..observability import logs, metrics
from ..runner.context import reserve_for_answer
from ..scheduling.refs import ModelRef, Runner
from ..scheduling.scheduler import Scheduler
from . import imagefetch, media, vectors
from .generation import ChatRequest, GenerateRequest, check_prompt_bytes, conversation, fit_bytes, runner_job
from .loadref import model_ref
from .media import check_markers
from .templates import Templates

log = logging.getLogger("localllm.service")

# Clients count tokens with their own tokenizer (LangChain's OpenAIEmbeddings sends OpenAI's ids by default):
# embedding those ids as this model's would answer wrong vectors with a 200.
TOKEN_IDS_REFUSED = (
    "input holds token ids, which are refused by default: they come from the client's tokenizer, not this "
    "model's, so their vectors would be wrong. Send the text instead (LangChain: "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False)); an operator who knows the ids are this model's "
    "can allow them with LOCALLLM_EMBED_TOKEN_IDS=1"
)


MODELS_KEPT = 64  # read models (and load specs) kept at most; past that the cache starts again


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        scheduler: Scheduler,
        *,
        renderer: Renderer | None = None,
        fetch: media.Fetcher = imagefetch.fetch,
    ) -> None:
        self.settings = settings
        self._fetch = fetch  # remote images (LOCALLLM_ALLOW_IMAGE_URLS)
        self.store = store
        self.scheduler = scheduler
        self._pull_locks: dict[str, asyncio.Lock] = {}
        self._damaged: set[tuple[str, str]] = set()  # the damaged models logged so far, with what is wrong
        self.templates = Templates(renderer)
        # Models read from the store, by their manifest's path and bytes (`Store.stamp`), and the load spec of
        # a model with the options that shape it: every request needs both, and reading a model (its manifest,
        # its layers, its GGUF's metadata) took a fifth of a millisecond, as long again to work out its spec.
        self._models: dict[tuple[str, bytes], Model] = {}
        self._refs: dict[tuple[object, ...], tuple[Model, ModelRef]] = {}

    async def close(self) -> None:
        await self.scheduler.close()
        await self.templates.close()

    # -- models ------------------------------------------------------------------------------------

    def model(self, name: ModelName) -> Model:
        """The stored model of that name; `ModelNotFound` when there is none (never a fallback)."""
        stamp = self.store.stamp(name)
        cached = self._models.get(stamp) if stamp is not None else None
        if cached is not None and all(self.store.has_blob(x.digest) for x in cached.stored.manifest.layers):
            return cached  # (a blob moved aside by `verify`: read again, and found damaged)
        model = read_model(self.store, name)
        if stamp is not None:
            if len(self._models) >= MODELS_KEPT:
                self._models.clear()
            self._models[stamp] = model
        return model

    def list_models(self, damaged: list[DamagedModel] | None = None) -> list[Model]:
        """The models that can be served; those that cannot are added to `damaged`, and logged once each."""
        out = []
        for stored in self.store.models():
            try:
                out.append(self.model(stored.name))
            except Exception as exc:
                problem = diagnose(self.store, stored, exc)
                if (str(stored.name), problem) not in self._damaged:
                    self._damaged.add((str(stored.name), problem))
                    log.warning("model %s is damaged: %s", stored.name, problem)
                if damaged is not None:
                    damaged.append(DamagedModel(stored, problem))
        return out

    def copy(self, source: ModelName, destination: ModelName) -> None:
        self.store.copy(source, destination)

    async def delete(self, name: ModelName) -> None:
        model = self.store.get(name)
        still_used = any(
            m.manifest.model_layers == model.manifest.model_layers for m in self.store.models() if m.name != model.name
        )
        if not still_used:
            await self.scheduler.unload(str(self.store.model_path(model.manifest)))
        self.store.delete(model.name)

    async def pull(self, name: ModelName) -> AsyncGenerator[Progress, None]:
        """Pull from the Hub in a worker thread, relaying its progress; closing early cancels it."""
        from ..modelstore import hub

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Progress | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()
        done: dict[str, int] = {}  # bytes downloaded of each blob so far (for the metrics)

        def work() -> None:
            try:
                for progress in hub.pull(self.store, name, cancel=cancel):
                    loop.call_soon_threadsafe(events.put_nowait, progress)
            except BaseException as exc:
                loop.call_soon_threadsafe(events.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(events.put_nowait, None)

        # One download at a time per model: a second pull of it waits, then finds the blobs in the store.
        async with self._pull_locks.setdefault(str(name).lower(), asyncio.Lock()):
            thread = threading.Thread(target=work, name=f"pull {name}", daemon=True)
            thread.start()
            try:
                while (event := await events.get()) is not None:
                    if isinstance(event, BaseException):
                        raise event
                    if event.status == "success":  # a hostile chat template is reported now, not at first chat
                        await self._check_pulled(name)
                    if event.status.startswith("pulling ") and event.digest and event.completed is not None:
                        # a download reports 0 bytes first (a blob found in the store does not), then its progress
                        if event.digest in done:
                            metrics.count_pull(str(name), event.completed - done[event.digest])
                        if event.digest in done or event.completed == 0:
                            done[event.digest] = event.completed
                    yield event
            finally:
                cancel.set()

    async def _check_pulled(self, name: ModelName) -> None:
        path = self.store.model_path(self.store.get(name).manifest)
        try:
            await self.templates.check_gguf_template(path, f"the chat template in the GGUF of '{name}'")
        except InvalidRequest:
            self.store.delete(name)
            raise

    # -- generation --------------------------------------------------------------------------------

    def _ref(self, model: Model, options: Options) -> ModelRef:
        logs.note_model(model.name)  # the request runs this model (its log lines and metrics say so)
        key = (id(model), *(getattr(options, name) for name in LOAD_OPTIONS))
        known = self._refs.get(key)
        if known is not None and known[0] is model:  # (the model is kept with its ref: its id is not reused)
            return known[1]
        ref = model_ref(model, options, self.settings, self.store, self.scheduler.machine)
        if len(self._refs) >= MODELS_KEPT:
            self._refs.clear()
        self._refs[key] = (model, ref)
        return ref

    def _check_generative(self, model: Model, what: str) -> None:
        if "completion" not in model.capabilities:
            raise InvalidRequest(f'"{model.name}" does not support {what}', field="model")

    def _can_think(self, model: Model, template: str | None, think: thinking.Think, field: str = "think") -> bool:
        """Whether the template supports thinking; `think` asked of one that cannot is refused (naming the
        request's `field`), as Ollama and OpenAI do."""
        capable = prompt.supports_thinking(template)
        if think not in (None, False) and not capable:
            raise InvalidRequest(f'"{model.name}" does not support thinking', field=field)
        return capable

    def _chat_thinking(self, model: Model, req: ChatRequest) -> tuple[bool, thinking.Think, int | None]:
        """Whether the model can think, the `think` its template is rendered with, and the thinking budget kept:
        where the model thinks and its output is free (a grammar rules the output from its first token). A
        budget turns thinking on where `think` leaves it to the template."""
        capable = self._can_think(model, model.template, req.think, req.think_field)
        free = req.constraints.format is None and not req.constraints.grammar
        budget = req.think_budget if capable and req.think is not False and free else None
        return capable, True if budget is not None and req.think is None else req.think, budget

    async def generate(self, req: GenerateRequest) -> AsyncGenerator[Event, None]:
        started = time.perf_counter_ns()
        model = self.model(req.model)
        self._check_generative(model, "generate")
        options = bounded(req.options.merged_over(model.parameters), model.parameters, self.settings.max_tokens)
        limits.check_generation((), constraints=req.constraints, stop=options.stop)
        capable = self._can_think(model, req.template or model.template, req.think)
        items = await media.prepare(model, req.media, allow_urls=self.settings.allow_image_urls, fetch=self._fetch)
        if req.suffix:
            if model.info.fim is None:
                raise InvalidRequest(
                    f'"{model.name}" does not support insert: it has no fill-in-the-middle tokens', field="suffix"
                )
            pre, suf, mid = model.info.fim
            text = f"{pre}{req.prompt}{suf}{req.suffix}{mid}"
        elif req.raw or not req.prompt:
            text = req.prompt
        else:
            system = req.system if req.system is not None else model.system
            text = await self.templates.render_prompt(
                model,
                req.prompt,
                system=system,
                template=req.template,
                n_ctx=None if req.truncate else self._ref(model, options).spec.n_ctx,
                think=req.think,
            )
        events: AsyncGenerator[Event, None] = self._run(
            model,
            options,
            text if req.prompt or req.suffix else "",
            req.keep_alive,
            started,
            field="prompt",
            constraints=req.constraints,
            truncate=req.truncate,
            media=items,
        )
        if not req.suffix and thinking.splits(capable, req.think, text, default=not req.raw):
            events = thinking.split_thinking(events, opened=thinking.opens_thinking(text))
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def chat(self, req: ChatRequest) -> AsyncGenerator[Event, None]:
        """The chat's events: the output read by its template's format family (`chat.formats`) into reasoning,
        answer and tool calls as it streams. A call required (`tool_choice`) is constrained to the family's own
        call syntax (`_call_syntax`), or, for a template without one, to a JSON call: all of it held back and
        parsed as that (`tools.held_back`), its id in the shape the template takes."""
        events = self._chat(req)
        if req.tools and req.call_required and self._call_syntax(req) is None:
            short = await self._short_call_ids(req)
            events = held_back(events, req.tools, forced=True, short_ids=short)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    def _call_syntax(self, req: ChatRequest) -> CallSyntax | None:
        """A call in the template family's own syntax (`formats.grammar`): from the first token when a call is
        required (in place of the generic JSON call of `format`), lazy (from the family's call marker) when
        the model decides and nothing else constrains the output; None where the family has no such syntax."""
        if not req.tools:
            return None
        family = syntax_of(self.model(req.model).template_for(tools=True)[0])
        if req.call_required:
            chosen = chosen_tools(req.tools, req.constraints.format)
            for tool in chosen:  # their schemas become a grammar: its bounds apply, as to `format`'s
                limits.check_schema(tool.parameters, f"tools[{req.tools.index(tool)}].function.parameters")
            return call_syntax(family, chosen, lazy=False)
        if req.constraints.format is None and not req.constraints.grammar and all(map(_grammar_sized, req.tools)):
            return call_syntax(family, req.tools, lazy=True)
        return None  # a tool whose schema is past a grammar's bounds (Claude Code's maxLength 524288): free output

    async def _short_call_ids(self, req: ChatRequest) -> bool:
        """Whether the template takes back only 9-character call ids (Mistral's), so the calls get such ids."""
        template, label = self.model(req.model).template_for(tools=True)
        return bool(template) and (await self.templates.caps(str(template), TemplateSource(label))).short_call_ids

    async def _chat(self, req: ChatRequest) -> AsyncGenerator[Event, None]:
        started = time.perf_counter_ns()
        model = self.model(req.model)
        self._check_generative(model, "chat")
        options = bounded(req.options.merged_over(model.parameters), model.parameters, self.settings.max_tokens)
        limits.check_generation(req.messages, tools=req.tools, constraints=req.constraints, stop=options.stop)
        messages = await self._with_media(model, conversation(model, req.messages))
        if not model.template_for(tools=bool(req.tools))[0]:  # the plain transcript: its turn markers end it
            options = replace(options, stop=(*(options.stop or ()), *prompt.PLAIN_STOPS))
        context = None if req.truncate else self._ref(model, options).spec.n_ctx  # to refuse what cannot fit
        capable, think, budget = self._chat_thinking(model, req)

        async def render(kept: Sequence[ChatMessage]) -> str:
            text = await self.templates.render(model, kept, tools=req.tools, n_ctx=context, think=think)
            return text if budget is None else thinking.prefilled(text)

        full = await render(messages) if req.messages else ""

        async def fit(runner: Runner, n_ctx: int) -> tuple[str, int, tuple[Media, ...]]:
            """Drop the oldest turns (never a system message, never the last message) until the rendered
            conversation leaves room for the answer; the tokens dropped are reported. A conversation with more
            bytes than the context can hold loses turns before it is tokenized (those counted at 4 bytes a token).
            Counted with the kept turns' media (each item as the positions it takes)."""
            kept, text = await fit_bytes(list(messages), full, render, limits.prompt_bytes(n_ctx))
            n = len(await runner.tokenize(text, media.media_of(kept)))
            first = n + (limits.utf8_len(full) - limits.utf8_len(text)) // 4
            room = n_ctx - reserve_for_answer(n_ctx, options.num_predict)
            while n > room:
                droppable = [i for i, m in enumerate(kept[:-1]) if m.role != "system"]
                if not droppable:
                    break
                del kept[droppable[0]]
                text = await render(kept)
                n = len(await runner.tokenize(text, media.media_of(kept)))
            logs.note_prompt(n)
            if n < first:
                log.warning(
                    "%s: dropped %d old turns (%d tokens) to fit the context of %d",
                    model.name,
                    len(messages) - len(kept),
                    first - n,
                    n_ctx,
                )
            return text, first - n, media.media_of(kept)

        syntax = self._call_syntax(req)
        constraints = req.constraints
        if syntax is not None:  # the family's call grammar takes the generic JSON call's place
            constraints = replace(constraints, format=None if req.call_required else constraints.format, calls=syntax)
        events: AsyncGenerator[Event, None] = self._run(
            model,
            options,
            full,
            req.keep_alive,
            started,
            field="messages",
            constraints=constraints,
            truncate=req.truncate,
            fit=fit if req.truncate else None,
            think_budget=budget,
            count_prompt=req.count_prompt,
            media=media.media_of(messages),
        )
        short = bool(req.tools) and await self._short_call_ids(req)
        template = model.template_for(tools=bool(req.tools))[0]
        # a required call is read by `held_back`, in `chat`, unless it is written in the family's syntax
        tools = () if req.call_required and syntax is None else req.tools
        events = stream.read(events, template, tools, capable, think, full, new_id=lambda: new_call_id(short))
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def _with_media(self, model: Model, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages with their media checked once, for every dialect (`media.prepare_messages`)."""
        allow = self.settings.allow_image_urls
        return await media.prepare_messages(model, messages, allow_urls=allow, fetch=self._fetch)

    async def count_chat(self, req: ChatRequest) -> int:
        """The input tokens `req` would have: its conversation (with the model's own system prompt and messages)
        and tools through the chat template, tokenized as generation would, media as their positions (loads it)."""
        model = self.model(req.model)
        self._check_generative(model, "chat")
        options = bounded(req.options.merged_over(model.parameters), model.parameters, self.settings.max_tokens)
        limits.check_generation(req.messages, tools=req.tools, constraints=req.constraints, stop=options.stop)
        ref = self._ref(model, options)
        _, think, budget = self._chat_thinking(model, req)
        messages = await self._with_media(model, conversation(model, req.messages))
        text = await self.templates.render(model, messages, tools=req.tools, n_ctx=ref.spec.n_ctx, think=think)
        text = text if budget is None else thinking.prefilled(text)
        items = media.media_of(messages)
        check_markers(model, text, items, "messages")
        async with self.scheduler.use(ref, keep_alive=self.settings.keep_alive) as lease:
            return len(await lease.runner.tokenize(text, items))

    async def _run(
        self,
        model: Model,
        options: Options,
        text: str,
        keep_alive: float | None,
        started: int,
        *,
        field: str,
        constraints: Constraints,
        truncate: bool = False,
        fit: Callable[[Runner, int], Awaitable[tuple[str, int, tuple[Media, ...]]]] | None = None,
        think_budget: int | None = None,
        count_prompt: bool = False,
        media: tuple[Media, ...] = (),
    ) -> AsyncGenerator[Token | Done, None]:
        """Generate from `text` on a slot of the model's runner. With `truncate`, an input too long for the
        context is cut (by `fit` first, when given: chat drops old turns) and the count reported in `Done`.
        With `think_budget`, `text` opens the thinking and the thinking is cut at that many tokens."""
        quota.check_quota()  # the request's API key may have used up its daily tokens
        ref = self._ref(model, options)
        keep = self.settings.keep_alive if keep_alive is None else keep_alive
        check_prompt_bytes(text, ref.spec.n_ctx, truncate=truncate, field=field)
        check_markers(model, text, media, field)
        if not text:
            # An empty prompt loads the model, or with keep_alive 0 unloads it (as Ollama does).
            if keep <= 0:
                await self.scheduler.unload(ref.spec.model_path)
                yield Done("unload", total_duration=time.perf_counter_ns() - started)
                return
            async with self.scheduler.use(ref, keep_alive=keep) as lease:
                yield Done("load", load_duration=lease.load_duration, total_duration=time.perf_counter_ns() - started)
            return
        watching = metrics.active()
        queued = time.perf_counter_ns()
        async with self.scheduler.use(ref, keep_alive=keep) as lease:
            watch = None
            if watching is not None:
                waited = (time.perf_counter_ns() - queued - lease.load_duration) / 1e9
                watch = watching.watch(model.name, started, max(0.0, waited))
            dropped = 0
            n_ctx = lease.runner.info.n_ctx or ref.spec.n_ctx
            if fit is not None:
                text, dropped, media = await fit(lease.runner, n_ctx)  # counts the prompt (`logs.note_prompt`)
            elif count_prompt:
                logs.note_prompt(len(await lease.runner.tokenize(text, media)))
            job = runner_job(text, options, constraints, truncate, media)
            held = await quota.reserve_tokens(  # the prompt counted with its media, as the runner lays them out
                job.prompt, job.context, job.num_predict, n_ctx, lambda p: lease.runner.tokenize(p, job.media)
            )
            job = replace(job, num_predict=held.granted)

            def run(prompt: str, num_predict: int, stop: tuple[str, ...]) -> AsyncGenerator[Token | Done, None]:
                return lease.runner.generate(replace(job, prompt=prompt, num_predict=num_predict, stop=stop))

            generation = held.metered(
                lease.runner.generate(job)
                if think_budget is None
                else thinking.budgeted(run, text, think_budget, num_predict=job.num_predict, stop=job.stop),
            )
            try:
                async with contextlib.aclosing(generation) as events:
                    async for event in events:
                        if watch is not None:
                            watch.see(event)
                        if isinstance(event, Done):
                            logs.note_tokens(event.prompt_eval_count + event.cached_tokens, event.eval_count)
                            if event.truncated:
                                log.warning("%s: cut %d input tokens to fit the context", model.name, event.truncated)
                            event = replace(
                                event,
                                load_duration=lease.load_duration,
                                total_duration=time.perf_counter_ns() - started,
                                truncated=event.truncated + dropped,
                            )
                        yield event
            except BaseException as exc:
                if watch is not None:
                    watch.fail()
                if isinstance(exc, ContextLengthExceeded):
                    exc.field = field
                raise

    async def tokenize(
        self, name: ModelName, text: str, *, add_bos: bool = True, keep_alive: float | None = None
    ) -> list[tuple[int, bytes]]:
        """The model's tokens for `text`, each with its bytes (empty for a special token); loads the model."""
        limits.check_bytes(text, limits.PROMPT_MAX_BYTES, "prompt", "text to tokenize")
        model = self.model(name)
        ref = self._ref(model, model.parameters)
        keep = self.settings.keep_alive if keep_alive is None else keep_alive
        async with self.scheduler.use(ref, keep_alive=keep) as lease:
            return await lease.runner.pieces(text, add_bos=add_bos)

    async def detokenize(
        self, name: ModelName, tokens: Sequence[int], *, keep_alive: float | None = None
    ) -> list[bytes]:
        """Each token's bytes, special tokens written out (their join is the text); loads the model."""
        limits.check_count(tokens, limits.MAX_TOKENIZE_IDS, "tokens", "token ids")
        model = self.model(name)
        ref = self._ref(model, model.parameters)
        keep = self.settings.keep_alive if keep_alive is None else keep_alive
        async with self.scheduler.use(ref, keep_alive=keep) as lease:
            try:
                return await lease.runner.detokenize(tokens)
            except InvalidRequest as exc:
                exc.field = "tokens"
                raise

    # -- rerank ------------------------------------------------------------------------------------

    async def rerank(
        self, name: ModelName, query: str, documents: Sequence[str], *, keep_alive: float | None = None
    ) -> Ranking:
        """One relevance score per document for `query`, by a reranker (a model of pooling type rank); every
        pair goes to the runner in one request. Any other model is an InvalidRequest naming `model`."""
        started = time.perf_counter_ns()
        quota.check_quota()
        model = self.model(name)
        if "rerank" not in model.capabilities:
            kind = "an embedding model" if "embedding" in model.capabilities else "a generative model"
            raise InvalidRequest(
                f'"{model.name}" is {kind}, not a reranker: rerank needs a cross-encoder GGUF (pooling type rank)',
                field="model",
            )
        limits.check_count(documents, limits.MAX_RERANK_DOCUMENTS, "documents", "documents")
        ref = self._ref(model, model.parameters)
        budget = limits.prompt_bytes(ref.spec.n_ctx)
        for i, text in enumerate([query, *documents]):
            what = "query" if i == 0 else f"document {i - 1}"
            limits.check_bytes(text, budget, "query" if i == 0 else "documents", what)
        keep = self.settings.keep_alive if keep_alive is None else keep_alive
        async with self.scheduler.use(ref, keep_alive=keep) as lease:
            try:
                scores, count = await lease.runner.rerank(query, documents) if documents else ([], 0)
            except ContextLengthExceeded as exc:
                exc.field = "documents"
                raise
        quota.charge(count)
        return Ranking(scores, count, time.perf_counter_ns() - started, lease.load_duration)

    # -- embeddings --------------------------------------------------------------------------------

    async def embed(
        self,
        model_name: ModelName | str,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        truncate: bool = True,
        dimensions: int | None = None,
        keep_alive: float | None = None,
        options: Options | None = None,
        normalize: bool = True,
    ) -> Embeddings:
        """One embedding per input (text or token ids), unit vectors unless `normalize` is false.

        `dimensions` keeps the first that many components and normalises again. No inputs loads the model
        (or with keep_alive 0 unloads it) and answers no vectors, as an empty prompt does for generate.
        """
        started = time.perf_counter_ns()
        quota.check_quota()
        name = model_name if isinstance(model_name, ModelName) else parse_name(model_name, field="model")
        if any(not isinstance(item, str) for item in inputs) and not self.settings.embed_token_ids:
            raise InvalidRequest(TOKEN_IDS_REFUSED, field="input")
        model = self.model(name)
        if "embedding" not in model.capabilities:
            raise InvalidRequest(f'"{model.name}" does not support embeddings', field="model")
        width = vectors.stated_width(model.info.metadata.get(f"{model.info.architecture}.embedding_length"))
        if dimensions is not None:
            vectors.check_dimensions(dimensions, width)
        merged = (options or Options()).merged_over(model.parameters)
        ref = self._ref(model, merged)
        keep = self.settings.keep_alive if keep_alive is None else keep_alive
        limits.check_count(inputs, limits.MAX_EMBED_INPUTS, "input", "inputs")
        for item in inputs:
            check_prompt_bytes(item if isinstance(item, str) else "", ref.spec.n_ctx, truncate=truncate, field="input")
        if not inputs and keep <= 0:
            await self.scheduler.unload(ref.spec.model_path)
            return Embeddings([], total_duration=time.perf_counter_ns() - started)
        async with self.scheduler.use(ref, keep_alive=keep) as lease:
            out: list[list[float]] = []
            count = 0
            if inputs:
                try:
                    out, count = await lease.runner.embed(inputs, truncate, normalize=normalize)
                except ContextLengthExceeded as exc:
                    exc.field = "input"
                    raise
        if dimensions is not None and out:
            vectors.check_dimensions(dimensions, len(out[0]))
            out = [vectors.cut(v, dimensions) for v in out]
        quota.charge(count)
        return Embeddings(out, count, time.perf_counter_ns() - started, lease.load_duration)

    def loaded(self) -> list[Any]:
        return self.scheduler.loaded()


def _grammar_sized(tool: Tool) -> bool:
    """Whether a tool's schema is within the bounds a grammar is built under (`limits.check_schema`)."""
    try:
        limits.check_schema(tool.parameters, "tools")
    except InvalidRequest:
        return False
    return True
