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
(`open_report`) and reads back when the answer starts (`header`); the readers call `unknown(names)` wherever they
find unknown fields (`requests.read_wire`, for every wire model). Outside a
request (translators called by tests) the default policy applies and nothing is recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
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
HEADER_NAMES = 32  # names listed in the header at most (then "+N more")
NAME_CHARS = 64  # characters of a name shown at most (in the header and the log)
_PLAIN = re.compile(r"[A-Za-z0-9_\-.\[\]$@/:]+")


@dataclass
class Report:
    """One request's unknown fields: the policy it runs under, and what was ignored."""

    strict: bool = False
    client: str = ""
    ignored: list[str] = field(default_factory=list)


_current: contextvars.ContextVar[Report | None] = contextvars.ContextVar("localllm_fields", default=None)
_seen: set[tuple[str, str]] = set()


def open_report(*, strict: bool, client: str) -> tuple[Report, contextvars.Token[Report | None]]:
    """Open a request's report (the outermost middleware); everything the request runs sees it until
    `close_report`."""
    report = Report(strict, client[:200])
    return report, _current.set(report)


def close_report(token: contextvars.Token[Report | None]) -> None:
    _current.reset(token)


@contextlib.contextmanager
def begin(*, strict: bool, client: str) -> Iterator[Report]:
    """A report open for the block (tests, and code outside the middleware)."""
    report, token = open_report(strict=strict, client=client)
    try:
        yield report
    finally:
        close_report(token)


def shown(name: str) -> str:
    """A field name as the header and the log show it: as sent when it is plain ASCII (letters, digits,
    `_-.[]$@/:`), else as a JSON string in ASCII (quotes, control characters and non-ASCII escaped), so that no
    name can break the header or forge a log line; cut at `NAME_CHARS`."""
    cut = name[:NAME_CHARS] + ("..." if len(name) > NAME_CHARS else "")
    return cut if _PLAIN.fullmatch(cut) else json.dumps(cut)


def header(report: Report) -> str | None:
    """The `X-Localllm-Ignored-Fields` value: the ignored fields, comma-separated, in the order met (at most
    `HEADER_NAMES` of them, then how many more)."""
    names = list(dict.fromkeys(report.ignored))
    if not names:
        return None
    more = f", +{len(names) - HEADER_NAMES} more" if len(names) > HEADER_NAMES else ""
    return ", ".join(shown(n) for n in names[:HEADER_NAMES]) + more


def unknown(names: Iterable[str], accepted: Iterable[str] = (), *, why: str | None = None) -> None:
    """Apply the policy to fields a body holds that its reader does not know (`names`: paths as the
    dialects name them, `messages[0].foo`); `accepted` are the reader's own, for the refusal's message. Fields the
    reader knows and accepts without effect (Ollama's deprecated options) pass `why` (what the strict refusal
    says of them instead of "unknown field")."""
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
            label = shown(name)
            if why is not None:
                raise InvalidRequest(f"{label} {why} (LOCALLLM_STRICT_FIELDS=1)", field=label)
            known = sorted(accepted)
            listed = f" (accepted: {', '.join(known)})" if known else ""
            raise InvalidRequest(f"unknown field '{label}'{listed} (LOCALLLM_STRICT_FIELDS=1)", field=label)
        report.ignored.append(name)
    if report is not None and report.ignored:
        _log_new(report)


def _log_new(report: Report) -> None:
    """One line for the fields this client had not sent before (at most `HEADER_NAMES` named in it)."""
    client = report.client
    new = [n for n in dict.fromkeys(report.ignored) if (n, client) not in _seen]
    if not new:
        return
    if len(_seen) + HEADER_NAMES > _SEEN_MAX:
        _seen.clear()
    _seen.update((n, client) for n in new[:HEADER_NAMES])  # the ones named; a flood is not all remembered
    names = ", ".join(shown(n) for n in new[:HEADER_NAMES])
    more = f" and {len(new) - HEADER_NAMES} more" if len(new) > HEADER_NAMES else ""
    log.warning(
        "ignored the request field(s) %s%s sent by %s (unknown here, or options without effect; reported "
        "in X-Localllm-Ignored-Fields; LOCALLLM_STRICT_FIELDS=1 refuses such fields)",
        names,
        more,
        shown(client) if client else "a client with no User-Agent",
        extra={"client": client},
    )
