"""Who the request being served comes from: its `Principal`, made current by the server's auth middleware.

What the daemon keeps between requests for a client (LMDeploy sessions, stored responses) belongs to the
principal that made it: `tenant()` is the owner to record and to match. Without authentication every
request is the same, anonymous tenant.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

ANONYMOUS = ""  # the tenant of every request while authentication is off


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: an API key, an app (by its access token), or a LOCALLLM_API_KEYS entry."""

    id: str
    name: str
    quota: int | None = None

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("localllm_principal", default=None)


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Make `principal` the current request's (for everything it does, tasks it starts included)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Principal | None:
    """The current request's principal; None outside an authenticated request."""
    return _current.get()


def tenant() -> str:
    """The owner of what the current request keeps or looks up: its principal's id (ANONYMOUS when none)."""
    who = _current.get()
    return who.id if who is not None else ANONYMOUS
