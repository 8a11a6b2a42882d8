"""The one policy for request fields the daemon does not know, the same on every dialect (docs/compat.md).

```
 a top-level field the body's model does not declare
   ├─ in ACCEPTED (metadata, hints, betas whose effect is had here)  ─▶ accepted, nothing said
   ├─ in REFUSED (it would change the answer, and it is not honoured) ─▶ 400 naming it, with why
   └─ any other ─▶ LOCALLLM_STRICT_FIELDS=1: 400 naming it (and the accepted ones)
                   else: accepted AND reported: listed in the answer's `X-Localllm-Ignored-Fields` header,
                         logged once per field name and client (`User-Agent`)
```

A request's report lives in a context variable that the outermost middleware (`observe.RequestIds`) opens
(`begin`) and reads back when the answer starts (`header`); the readers call `unknown(names)` wherever they
find unknown fields (`requests.read_wire` for wire models, `fields.check_fields` for field tables). Outside a
request (translators called by tests) the default policy applies and nothing is recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..domain.errors import InvalidRequest

log = logging.getLogger("localllm.server")

HEADER = "x-localllm-ignored-fields"

# Accepted on every dialect and never reported: metadata, hints, and betas whose effect the daemon already has
# (docs/compat.md says why for each).
ACCEPTED = frozenset(
    {
        "client_metadata",  # Codex CLI: its session, for the server's logs
        "metadata",  # the client's tags (`user_id`, ...)
        "prompt_cache_key",  # a caching hint: a slot's KV cache is reused here anyway
        "safety_identifier",  # an end user's id, for a provider's abuse checks
        "service_tier",  # there is one tier here
        "store",  # OpenAI's chat completions: whether the provider keeps it (Responses declares its own)
        "user",  # an end user's id
        "stream_options",  # where not declared: usage is always sent with the last chunk here
        "parallel_tool_calls",  # where not declared: a hint (the models call one or several tools as they do)
        "prediction",  # a predicted output, to speed decoding: the answer is the same without it
        "speed",
        "inference_geo",
    }
)

# Refused on every dialect where they are not declared: each would change the answer, and none is honoured.
REFUSED = {
    "web_search_options": "web search is not available here",
    "audio": "audio output is not supported here (the models here write text)",
    "modalities": "only text output is supported here",
    "conversation": "stored conversations are not supported here: send previous_response_id, or the items",
    "prompt": "stored prompt templates are not supported here: send the instructions and input",
    "container": "code execution containers are not available here",
    "mcp_servers": "remote MCP servers are not available here",
}

_SEEN_MAX = 4096  # (field, client) pairs remembered for the log-once rule; past it, the set starts again


@dataclass
class Report:
    """One request's unknown fields: the policy it runs under, and what was ignored."""

    strict: bool = False
    client: str = ""
    ignored: list[str] = field(default_factory=list)


_current: contextvars.ContextVar[Report | None] = contextvars.ContextVar("localllm_fields", default=None)
_seen: set[tuple[str, str]] = set()


@contextlib.contextmanager
def begin(*, strict: bool, client: str) -> Iterator[Report]:
    """Open a request's report (the outermost middleware); everything the request runs sees it."""
    report = Report(strict, client[:200])
    token = _current.set(report)
    try:
        yield report
    finally:
        _current.reset(token)


def header(report: Report) -> str | None:
    """The `X-Localllm-Ignored-Fields` value: the ignored fields, comma-separated, in the order met."""
    return ", ".join(dict.fromkeys(report.ignored)) if report.ignored else None


def unknown(names: Iterable[str], accepted: Iterable[str] = ()) -> None:
    """Apply the policy to fields a body holds that its reader does not know (`names`: paths as the
    dialects name them, `messages[0].foo`); `accepted` are the reader's own, for the refusal's message."""
    report = _current.get()
    for name in names:
        last = name.rpartition(".")[2]
        if last in ACCEPTED:
            continue
        if last in REFUSED:
            raise InvalidRequest(f"{name}: {REFUSED[last]}", field=name)
        if report is None:
            continue  # outside a request: the default policy, nobody to tell
        if report.strict:
            known = sorted(accepted)
            listed = f" (accepted: {', '.join(known)})" if known else ""
            raise InvalidRequest(f"unknown field '{name}'{listed} (LOCALLLM_STRICT_FIELDS=1)", field=name)
        report.ignored.append(name)
        _log_once(name, report.client)


def _log_once(name: str, client: str) -> None:
    key = (name, client)
    if key in _seen:
        return
    if len(_seen) >= _SEEN_MAX:
        _seen.clear()
    _seen.add(key)
    log.warning(
        "ignored the unknown request field '%s' sent by %s (reported in X-Localllm-Ignored-Fields; "
        "LOCALLLM_STRICT_FIELDS=1 refuses such fields)",
        name,
        client or "a client with no User-Agent",
        extra={"field": name, "client": client},
    )
