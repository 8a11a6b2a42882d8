"""Stateful conversations (LMDeploy's interactive sessions): the daemon keeps each session's history, so a
client sends only its new turn.

A session holds the tokens of everything said so far (`context`: every prompt and reply). A turn sends those
tokens and the new text to the runner, whose slot still holds their KV cache from the last turn: only the
new tokens are evaluated (plus the last reply token when the reply was cut by a length limit or a stop
sequence, as that token was never fed back). With a chat template the new turn is the template's rendering
of the conversation with the new user message, minus what the session already holds; without one it is the
text as given.

A session ends when a turn asks for it (`end`), when it has been idle for the daemon's keep-alive, when its
model is unloaded (its cache is gone), or to make room: at most `limit` sessions are kept, the least recently
used idle one going first. Its memory is bounded by the model's context window: a turn that would overflow
it is refused (`ContextLengthExceeded`), and the session is left as it was.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace

from ..auth.principal import tenant
from ..chat import prompt
from ..domain.errors import InvalidRequest, ServerBusy
from ..domain.events import Done, Event, Token
from ..domain.messages import ChatMessage
from ..domain.names import ModelName
from ..domain.options import Constraints, Options
from .core import Service
from .generation import GenerateRequest

DEFAULT_LIMIT = 64


@dataclass
class Session:
    id: int
    model: ModelName
    digest: str  # the model's manifest: the session lives only while that model stays loaded
    owner: str = ""  # the principal that opened it (auth.principal.tenant): no other one sees it
    context: tuple[int, ...] = ()  # tokens of every prompt and reply so far
    rendered: str = ""  # their text, when the model has a chat template
    messages: list[ChatMessage] = field(default_factory=list)
    last_used: float = 0.0
    running: AsyncGenerator[Event, None] | None = None  # the turn in flight
    cancelled: bool = False

    @property
    def busy(self) -> bool:
        """A turn is in flight (a turn that was never started and has been closed does not count)."""
        return self.running is not None and getattr(self.running, "ag_frame", None) is not None


@dataclass(frozen=True)
class Turn:
    """What is known of a turn before it generates."""

    session_id: int
    input_tokens: int  # tokens of the new turn
    history_tokens: int  # tokens the session held before it


class Sessions:
    """The sessions of one daemon, keyed by their owner and the client's session id: each belongs to the
    principal (API key, app) whose request opened it, and to any other it does not exist, so that one key
    can neither read another's history nor end or cancel its sessions. Every method acts for the current
    request's principal (`auth.principal.tenant()`)."""

    def __init__(self, service: Service, *, limit: int = DEFAULT_LIMIT, clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.limit = limit
        self.clock = clock
        self._sessions: dict[tuple[str, int], Session] = {}
        self._ids = itertools.count(1 << 31)  # ids for clients that ask for a new session (-1)

    def __len__(self) -> int:
        return len(self._sessions)

    def new_id(self) -> int:
        return next(self._ids)

    def get(self, session_id: int) -> Session | None:
        self._sweep()
        return self._sessions.get((tenant(), session_id))

    def end(self, session_id: int) -> bool:
        """Forget a session (a turn in flight finishes first and is not recorded)."""
        session = self._sessions.pop((tenant(), session_id), None)
        if session is not None:
            session.cancelled = session.busy
        return session is not None

    def cancel(self, session_id: int) -> bool:
        """Stop the turn in flight in a session; the session stays as it was before that turn."""
        session = self._sessions.get((tenant(), session_id))
        if session is None or not session.busy:
            return False
        session.cancelled = True
        return True

    def _sweep(self) -> None:
        """End idle sessions that have expired or whose model is no longer loaded."""
        now = self.clock()
        ttl = self.service.settings.keep_alive
        loaded = {getattr(m, "digest", None) for m in self.service.loaded()}
        for key, s in list(self._sessions.items()):
            if not s.busy and (now - s.last_used > ttl or (s.context and s.digest not in loaded)):
                del self._sessions[key]

    def _open(self, session_id: int, name: ModelName, digest: str) -> Session:
        if len(self._sessions) >= self.limit:
            idle = [s for s in self._sessions.values() if not s.busy]
            if not idle:
                raise ServerBusy(f"all {self.limit} sessions are busy; try again later")
            oldest = min(idle, key=lambda s: s.last_used)
            del self._sessions[oldest.owner, oldest.id]
        session = Session(session_id, name, digest, owner=tenant(), last_used=self.clock())
        self._sessions[session.owner, session_id] = session
        return session

    async def turn(
        self,
        session_id: int,
        name: ModelName,
        text: str,
        *,
        start: bool,
        end: bool,
        options: Options,
        constraints: Constraints,
    ) -> tuple[Turn, AsyncGenerator[Event, None]]:
        """Begin a turn: `start` opens the session anew (dropping any history), `end` closes it afterwards.

        Returns what is known before generating and the turn's events; the session records the turn when its
        `Done` arrives. A turn cancelled (`cancel`) ends with `Done("cancel")` and is not recorded."""
        session = self.get(session_id)
        model = self.service.model(name)
        if session is not None and session.busy:
            raise InvalidRequest(f"session {session_id} is busy with another request", field="session_id")
        if session is not None and not start and session.digest != model.stored.manifest.digest:
            raise InvalidRequest(
                f"session {session_id} talks to {session.model}, not {name}: end it first", field="session_id"
            )
        if session is None or start:
            self.end(session_id)
            session = self._open(session_id, name, model.stored.manifest.digest)
        context = session.context
        messages = [*session.messages, ChatMessage("user", text)]
        if model.template:
            system = [ChatMessage("system", model.system)] if model.system else []
            full = await self.service.templates.render(model, [*system, *messages])
            if context and full.startswith(session.rendered):
                new = full[len(session.rendered) :]
            else:  # the template rewrites earlier turns: send it all (the slot's cache still has the prefix)
                new, context = full, ()
        else:
            full = ""
            new = text if context else prompt.render_generate(text, system=model.system)
        if not new:
            raise InvalidRequest("the prompt is empty: nothing to say in this turn", field="prompt")
        pieces = await self.service.tokenize(name, new, add_bos=not context)
        turn = Turn(session_id, len(pieces), len(context))
        request = GenerateRequest(
            model=name, prompt=new, raw=True, options=options, constraints=replace(constraints, context=context)
        )
        session.cancelled = False
        session.running = self._run(session, request, messages, full, end=end)
        return turn, session.running

    async def _run(
        self, session: Session, request: GenerateRequest, messages: list[ChatMessage], rendered: str, *, end: bool
    ) -> AsyncGenerator[Event, None]:
        reply: list[str] = []
        try:
            async for event in self.service.generate(request):
                if session.cancelled:
                    yield Done("cancel")
                    return
                if isinstance(event, Done):
                    session.context = event.context or ()
                    session.rendered = rendered + "".join(reply) if rendered else ""
                    session.messages = [*messages, ChatMessage("assistant", "".join(reply))]
                elif isinstance(event, Token):
                    reply.append(event.text)
                yield event
        finally:
            session.running = None
            session.cancelled = False
            session.last_used = self.clock()
            if end and self._sessions.get((session.owner, session.id)) is session:
                del self._sessions[session.owner, session.id]
