"""Daily token quotas: prompt and completion tokens per principal and UTC day, in the daemon's memory (a
restart forgets today's counts).

A request may not spend more than its principal has left. Before a generation the service reserves its
prompt and the most answer tokens it may write (`reserve`): the answer's `num_predict` is cut to what is left
after the prompt and after what the principal's other requests in flight have reserved, so no request,
alone or beside others, goes past the quota. When the generation ends the reservation is settled with the
real count. Embeddings and reranking are charged after the fact (their size is bounded by the request's).

The service acts on the current request (`metering`, set by the server's auth middleware, with the
principal of `auth.principal`); outside an authenticated request every function here does nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sized
from types import TracebackType
from typing import TypeVar

from ..domain.errors import InvalidRequest, QuotaExceeded
from ..domain.events import Done, Token
from .principal import Principal, current

E = TypeVar("E")


class Quotas:
    """The tokens each principal used today and those its requests in flight reserved; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._used: dict[str, tuple[dt.date, int]] = {}
        self._reserved: dict[str, int] = {}

    def used_today(self, principal: Principal) -> int:
        today = self._today()
        with self._lock:
            day, used = self._used.get(principal.id, (today, 0))
        return used if day == today else 0

    def check(self, principal: Principal) -> None:
        """`QuotaExceeded` when the principal's tokens for today (with those reserved) reach its quota."""
        if principal.quota is None:
            return
        with self._lock:
            used, reserved = self._used_locked(principal), self._reserved.get(principal.id, 0)
        if used >= principal.quota:
            raise self._used_up(principal, used)
        if used + reserved >= principal.quota:
            raise QuotaExceeded(
                f"the daily quota of {principal.quota} tokens of {principal.label} is held by its requests in "
                f"flight ({used} tokens used today, {reserved} reserved); try again when they end",
                retry_after=1,
            )

    def charge(self, principal: Principal, tokens: int) -> None:
        """Count `tokens` (prompt and completion) against the principal's day."""
        with self._lock:
            self._used[principal.id] = (self._today(), self._used_locked(principal) + max(0, tokens))

    def reserve(self, principal: Principal, prompt: int, answer: int) -> Reservation:
        """Hold `prompt` tokens and at most `answer` more (negative: as many as are left) against the
        principal's quota; the reservation says how many answer tokens it granted. `QuotaExceeded` when
        not even one answer token is left after the prompt."""
        with self._lock:
            used, reserved = self._used_locked(principal), self._reserved.get(principal.id, 0)
            left = (principal.quota - used - reserved) if principal.quota is not None else None
            if left is not None and left - prompt < 1:
                raise QuotaExceeded(
                    f"this request's {prompt} prompt tokens leave nothing of the daily quota of {principal.quota} "
                    f"tokens of {principal.label} ({used} used today, {reserved} reserved by requests in flight)",
                    retry_after=self._to_midnight() if reserved == 0 else 1,
                )
            granted = answer if left is None else (left - prompt if answer < 0 else min(answer, left - prompt))
            self._reserved[principal.id] = reserved + prompt + max(granted, 0)
        return Reservation(self, principal, prompt, granted)

    def _release(self, principal: Principal, tokens: int, charge: int) -> None:
        with self._lock:
            left = self._reserved.get(principal.id, 0) - tokens
            if left > 0:
                self._reserved[principal.id] = left
            else:
                self._reserved.pop(principal.id, None)
            self._used[principal.id] = (self._today(), self._used_locked(principal) + max(0, charge))

    def _used_locked(self, principal: Principal) -> int:
        day, used = self._used.get(principal.id, (self._today(), 0))
        return used if day == self._today() else 0

    def _used_up(self, principal: Principal, used: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"the daily quota of {principal.quota} tokens of {principal.label} is used up "
            f"({used} tokens today); it renews at 00:00 UTC",
            retry_after=self._to_midnight(),
        )

    def _to_midnight(self) -> int:
        now = dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc)
        midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        return max(1, int((midnight - now).total_seconds()))

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc).date()


class Reservation:
    """Tokens held for one generation: `granted` answer tokens (negative: no bound) after `prompt` tokens.

    `settle(tokens)` charges the real count and lets the rest go; leaving the `with` block unsettled (the
    client went away, the runner failed) charges the prompt and the answer tokens `seen` so far, but for a
    request refused as invalid (its input does not fit the context), which is charged nothing."""

    def __init__(self, quotas: Quotas | None, principal: Principal | None, prompt: int, granted: int) -> None:
        self._quotas = quotas
        self._principal = principal
        self.prompt = prompt
        self.granted = granted
        self.seen = 0
        self._open = quotas is not None and principal is not None

    def settle(self, tokens: int) -> None:
        if self._open and self._quotas is not None and self._principal is not None:
            self._open = False
            self._quotas._release(self._principal, self.prompt + max(self.granted, 0), tokens)

    async def metered(self, events: AsyncGenerator[E, None]) -> AsyncGenerator[E, None]:
        """`events` (a generation's), their tokens charged to this reservation: the real count at `Done`;
        when none comes, the prompt and one token a `Token` piece (each holds at least one)."""
        with self:
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, Token):
                        self.seen += 1
                    elif isinstance(event, Done):
                        self.settle(event.prompt_eval_count + event.cached_tokens + event.eval_count)
                    yield event

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.settle(0 if isinstance(exc, InvalidRequest) else self.prompt + self.seen)


_ledger: contextvars.ContextVar[Quotas | None] = contextvars.ContextVar("localllm_quotas", default=None)


@contextlib.contextmanager
def metering(quotas: Quotas) -> Iterator[None]:
    """Charge the usage of everything the current request does (tasks it starts included) to `quotas`."""
    token = _ledger.set(quotas)
    try:
        yield
    finally:
        _ledger.reset(token)


def check_quota() -> None:
    """`QuotaExceeded` when the current request's principal has used up (or reserved) its daily quota."""
    quotas, who = _ledger.get(), current()
    if quotas is not None and who is not None:
        quotas.check(who)


def charge(tokens: int) -> None:
    """Count `tokens` against the current request's principal (nothing outside an authenticated request)."""
    quotas, who = _ledger.get(), current()
    if quotas is not None and who is not None:
        quotas.charge(who, tokens)


def limited() -> bool:
    """Whether the current request's principal has a quota (so that a generation must reserve tokens)."""
    who = current()
    return _ledger.get() is not None and who is not None and who.quota is not None


def reserve(prompt: int, answer: int) -> Reservation:
    """Reserve `prompt` tokens and at most `answer` more for the current request (`Quotas.reserve`); outside
    an authenticated request, a reservation that grants `answer` and charges nothing."""
    quotas, who = _ledger.get(), current()
    if quotas is None or who is None:
        return Reservation(None, None, prompt, answer)
    return quotas.reserve(who, prompt, answer)  # with no quota: no bound, but the day's count is kept


async def reserve_tokens(
    prompt: str, context: Sized, answer: int, n_ctx: int, tokenize: Callable[[str], Awaitable[Sized]]
) -> Reservation:
    """`reserve` for a generation of `answer` tokens (`num_predict`; negative: no bound) from `prompt` after the
    `context` tokens, in a context of `n_ctx` tokens; the prompt is counted with `tokenize` (the runner's) only
    when a quota applies. The reservation's `granted` is the answer's `num_predict`, cut to what is left. It
    holds no more than the context leaves for the answer (a generation ends there anyway), so that one
    request with no `num_predict` does not hold the whole day's quota."""
    if not limited():
        return reserve(0, answer)
    prompt_tokens = len(context) + len(await tokenize(prompt))
    if prompt_tokens >= n_ctx:  # cut to fit (truncate) or refused by the runner: at most the context in all
        prompt_tokens, room = min(prompt_tokens, n_ctx), n_ctx
    else:
        room = n_ctx - prompt_tokens
    return reserve(prompt_tokens, room if answer < 0 else min(answer, room))
