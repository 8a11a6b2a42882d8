"""Every bound on work that grows faster than a request's byte size, declared once.

docs/limits.md is the table (field, bound, why); the dialects and the service refer to these names, and the
checks here raise `InvalidRequest` (a 400 in the dialect's shape) naming the field and the bound. A request
body is already capped at LOCALLLM_MAX_BODY (64 MiB): the bounds below are on what the daemon, a render
worker or a runner would build from it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from .errors import InvalidRequest
from .messages import Tool
from .options import Constraints

# -- chat templates (untrusted code: request `template`, Modelfile TEMPLATE, a GGUF's chat template) -------
TEMPLATE_MAX_BYTES = 256 << 10  # the template's own text; real chat templates are under 32 KiB
TEMPLATE_SECONDS = 2.0  # wall clock of one render, after which its worker process is killed and replaced
TEMPLATE_STEPS = 1_000_000  # loop iterations + calls + `range` items of one render (sandbox counter)
TEMPLATE_MEMORY = 512 << 20  # address space (RLIMIT_AS) of a render worker process
TEMPLATE_INT_BITS = 4096  # the largest integer `**` or `*` may build in a template
RENDER_QUEUE = 64  # renders waiting for a worker beyond which a request is answered 503 (busy)

# -- prompts -------------------------------------------------------------------------------------------------
BYTES_PER_TOKEN = 32  # generous: text is ~4 bytes a token; a prompt over this × num_ctx cannot fit
PROMPT_MAX_BYTES = 16 << 20  # any prompt, even one a runner would cut to fit (truncate)

# -- request fields ------------------------------------------------------------------------------------------
MAX_MESSAGES = 4096
MAX_TOOLS = 128
MAX_JSON_DEPTH = 128  # nesting of objects and lists in a request body (JSON schemas are held to 32 below)
MAX_UNKNOWN_FIELDS = 256  # unknown top-level fields of a body handed to the field policy (the first ones)
MAX_STOP = 32  # stop sequences; each is searched for after every token
MAX_STOP_BYTES = 1024  # one stop sequence
MAX_LOGIT_BIAS = 1024  # entries of logit_bias (OpenAI allows 300)
MAX_EMBED_INPUTS = 2048  # inputs of one embeddings request (OpenAI's own limit)
MAX_RERANK_DOCUMENTS = 1024  # documents of one rerank request (Cohere's own limit is 1000)
MAX_TOKENIZE_IDS = 1 << 20  # token ids of one detokenize request
MAX_CHOICES = 128  # generations of one request: n (or best_of) × prompts
SCHEMA_MAX_BYTES = 64 << 10  # a JSON schema (format, response_format, a tool's parameters) as JSON
SCHEMA_MAX_DEPTH = 32  # nesting of objects/arrays in a JSON schema
SCHEMA_MAX_REPEAT = 10_000  # minItems/maxItems/minLength/… of a schema: each becomes that many grammar items
SCHEMA_TOTAL_REPEAT = 100_000  # their sum over one schema
GRAMMAR_MAX_BYTES = 64 << 10  # a GBNF grammar (`grammar`) or one built from a regex
GRAMMAR_MAX_EXPANSION = 200_000  # symbols llama.cpp writes out for `x{m,n}` repetitions of one grammar
REGEX_MAX_BYTES = 4 << 10  # a regular expression turned into a grammar (TGI `grammar: {"type": "regex"}`)

# -- media: images and audio in requests (domain/mediacheck.py; docs/multimodal.md) ----------------------------
MEDIA_MAX_ITEMS = 32  # images and audio clips of one request (each is hundreds of tokens of encoder work)
IMAGE_MAX_BYTES = 20 << 20  # one image's file (OpenAI's own limit; Anthropic's is 5 MB)
AUDIO_MAX_BYTES = 25 << 20  # one audio clip's file (OpenAI's own limit for audio input)
MEDIA_REQUEST_MAX_BYTES = 48 << 20  # every item of one request together (a 64 MiB body holds 48 MiB in base64)
IMAGE_MAX_PIXELS = 1 << 25  # width × height an image's header declares (33.5 MP: 96 MiB as the RGB it decodes to)
IMAGE_MAX_SIDE = 1 << 14  # its width, and its height
AUDIO_MAX_SECONDS = 600.0  # one clip's length, read from its header (decoded to 16 kHz floats: 38 MiB at most)
IMAGE_URL_SECONDS = 10.0  # fetching one remote image (LOCALLLM_ALLOW_IMAGE_URLS=1), every redirect included
IMAGE_URL_REDIRECTS = 5  # redirects followed fetching it (each hop's address checked)

# -- credentials and durations ------------------------------------------------------------------------------
API_KEY_MIN_CHARS = 16  # a LOCALLLM_API_KEYS key (those `localllm keys create` makes have 47)
KEEP_ALIVE_MAX_S = 9_223_372_036.0  # Go's longest duration (2^63 ns, ~292 years): any longer keep_alive is forever

# -- stored responses (OpenAI Responses API, `store: true`; localllm/responses_store.py) ----------------------
# The same bounds hold for their files in LOCALLLM_RESPONSES_DIR (one per response; a bigger file is not read).
RESPONSES_MAX_COUNT = 1000  # responses kept (in memory, and on disk); the oldest go first
RESPONSES_MAX_BYTES = 64 << 20  # their size (response objects and conversations as stored); the oldest go first
RESPONSES_TTL_S = 24 * 3600.0  # a stored response expires after this long

# -- the prompt cache (saved KV states of the runners' sequences; runner/kvstates.py, runner/kvfiles.py) -------
PROMPT_CACHE_RAM_MAX = 8 << 30  # LOCALLLM_CACHE_RAM's default: this, or a quarter of the RAM free, if less
PROMPT_CACHE_RAM_SHARE = 4  # ... the default is the RAM available when the runner starts over this
PROMPT_CACHE_DISK = 16 << 30  # LOCALLLM_CACHE_DISK's default: the whole LOCALLLM_CACHE_DIR
PROMPT_CACHE_MIN_TOKENS = 64  # a sequence shorter than this is not saved
PROMPT_CACHE_MAX_STATES = 4096  # states in RAM, and files on disk, per runner (their tokens stay indexed)
PROMPT_CACHE_CANDIDATES = 64  # states compared token by token (one block each) in one lookup
PROMPT_CACHE_WRITES = 8  # state files queued for writing; past it a state stays in RAM only
PROMPT_CACHE_PREFETCH = 8  # the newest state files a starting runner reads back in the background (RAM bound too)
PROMPT_CHECKPOINT_SPACING = 512  # a long prompt's checkpoints (sliding-window, recurrent, hybrid models): apart
PROMPT_CHECKPOINT_TAIL = 4  # ... and one this many tokens before its end (and this + the batch size), as llama-server

# -- the runner boundary (runner/wire.py, runner/process.py) ---------------------------------------------------
RUNNER_MESSAGE_MAX = 1 << 30  # one answer of a runner, joined from its pieces; past it the runner is stopped

# -- connections (daemon.py) ---------------------------------------------------------------------------------
HEADER_SECONDS = 10.0  # a request's line and headers arrive within this from the connection (or the last answer)
BODY_SECONDS = 10.0  # a request's body arrives within this from its headers, plus 1 s per BODY_MIN_RATE bytes
BODY_MIN_RATE = 500  # bytes a second (as Apache's mod_reqtimeout: body=20,MinRate=500)
KEEP_ALIVE_SECONDS = 5  # a kept-alive connection with no new request is closed after this (uvicorn's default)
FD_RESERVE = 256  # open files kept for models, runners' pipes, the store... beyond the connections

# -- GGUF metadata (a model file is untrusted input too) ---------------------------------------------------
GGUF_MAX_KEYS = 1 << 16  # metadata keys of one file
GGUF_MAX_TENSORS = 1 << 17  # tensor infos of one file (the biggest MoE models have ~30k)
GGUF_MAX_ARRAY = 1 << 21  # strings in metadata arrays, each walked over (vocabularies ~260k, merges ~500k)
GGUF_MAX_STRING = 1 << 20  # one metadata string kept (longer ones are skipped, not read)
GGUF_MAX_KEPT_ARRAY = 1 << 16  # elements of an array kept in `metadata` (bigger ones are None)
GGUF_MAX_VERBOSE_ARRAY = 1 << 20  # elements of an array shown by `/api/show` with verbose (vocabularies)
GGUF_MAX_READ = 64 << 20  # bytes of metadata values kept for one file, verbose included

# -- the CLI (cli/attachments.py) -----------------------------------------------------------------------------
ATTACHMENT_MAX_BYTES = 100 << 20  # an image or audio file named in a `localllm run` prompt (Ollama's CLI: 100 MB)


def render_workers() -> int:
    """Render worker processes: one per core, at least 2 (a slow render never holds every worker), at most 4."""
    return max(2, min(4, os.cpu_count() or 2))


def prompt_cache_ram(available: int) -> int:
    """LOCALLLM_CACHE_RAM's default for a runner starting with `available` bytes of RAM free."""
    return max(0, min(PROMPT_CACHE_RAM_MAX, available // PROMPT_CACHE_RAM_SHARE))


def prompt_bytes(n_ctx: int) -> int:
    """The most bytes a prompt for a context of `n_ctx` tokens can have and still fit."""
    return min(PROMPT_MAX_BYTES, BYTES_PER_TOKEN * max(1, n_ctx))


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def utf8_len(text: str) -> int:
    """The bytes of `text` in UTF-8 (a lone surrogate, which JSON can carry, counted as 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def check_count(items: Sequence[Any], bound: int, field: str, what: str) -> None:
    if len(items) > bound:
        raise InvalidRequest(f"{field} holds {len(items)} {what}, more than the {bound} allowed", field=field)


def check_bytes(text: str, bound: int, field: str, what: str) -> None:
    if len(text) > bound or utf8_len(text) > bound:
        raise InvalidRequest(
            f"{field}: the {what} is {utf8_len(text)} bytes, more than the {size_text(bound)} allowed",
            field=field,
        )


def check_no_nul(text: str, field: str, what: str) -> None:
    """Text llama.cpp takes as a C string (a grammar, and the schemas and regexes made grammars) would be cut at
    a NUL character, and the constraint with it: refused, rather than quietly weakened."""
    if "\0" in text:
        raise InvalidRequest(
            f"{field}: the {what} holds a NUL character (\\u0000), which llama.cpp would cut it at", field=field
        )


def check_stop(stop: Sequence[str] | None, field: str = "stop") -> None:
    check_count(stop or (), MAX_STOP, field, "stop sequences")
    for s in stop or ():
        check_bytes(s, MAX_STOP_BYTES, field, "stop sequence")


_REPEAT_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minContains")


def check_schema(schema: Any, field: str = "format", *, grammar: bool = True) -> None:
    """A JSON schema small enough to read (bytes, depth, no NUL) and, when it becomes a `grammar` (built in the
    runner), small enough that the grammar stays small: its repetition counts. A tool's schema only becomes a
    grammar when a call is forced, and then as part of the call's schema (`constraints.format`), checked whole:
    agents declare tools with `maxLength: 524288` and never force them (Claude Code's)."""
    if not isinstance(schema, (dict, list)):
        return
    text = json.dumps(schema, ensure_ascii=False)
    check_bytes(text, SCHEMA_MAX_BYTES, field, "JSON schema")
    total = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > SCHEMA_MAX_DEPTH:
            raise InvalidRequest(f"{field}: the JSON schema nests deeper than {SCHEMA_MAX_DEPTH} levels", field=field)
        if isinstance(node, str):
            check_no_nul(node, field, "JSON schema")
        elif isinstance(node, dict):
            for key, value in node.items():
                check_no_nul(str(key), field, "JSON schema")
                if grammar and key in _REPEAT_KEYS and isinstance(value, int) and not isinstance(value, bool):
                    if value > SCHEMA_MAX_REPEAT:
                        raise InvalidRequest(
                            f"{field}: {key} {value} in the JSON schema is more than the {SCHEMA_MAX_REPEAT} "
                            "allowed (each becomes a grammar item)",
                            field=field,
                        )
                    total += max(value, 0)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
    if total > SCHEMA_TOTAL_REPEAT:
        raise InvalidRequest(
            f"{field}: the JSON schema's repetition counts add up to {total}, more than the "
            f"{SCHEMA_TOTAL_REPEAT} allowed",
            field=field,
        )


# One GBNF token: a comment, a string or class literal (with escapes), a repetition, a name, or one character.
_GBNF_TOKEN = re.compile(
    r'#[^\n]*|"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}|[A-Za-z0-9_-]+|\s+|.', re.S
)


def check_grammar(grammar: str, field: str = "grammar") -> None:
    """A GBNF grammar whose `x{m,n}` repetitions stay small once llama.cpp writes them out (it copies the
    repeated item up to max(m, n) times, so `"aaaa"{100000}` is 400k symbols from 15 bytes)."""
    check_bytes(grammar, GRAMMAR_MAX_BYTES, field, "grammar")
    check_no_nul(grammar, field, "grammar")
    expansion = 0
    last = 1  # the size of the item a repetition applies to: a literal's length, 1 for a name or a group
    for match in _GBNF_TOKEN.finditer(grammar):
        token = match.group(0)
        if match.group(1) is not None:
            low, high = int(match.group(1)), int(match.group(2) or 0)
            expansion += max(low, high) * last
            if expansion > GRAMMAR_MAX_EXPANSION:
                raise InvalidRequest(
                    f"{field}: the grammar's repetitions ({token.strip()}) write out more than "
                    f"{GRAMMAR_MAX_EXPANSION} symbols",
                    field=field,
                )
        elif not token.isspace() and not token.startswith("#"):
            last = max(1, len(token) - 2) if token[0] in '"[' else 1


def check_regex(pattern: str, field: str) -> None:
    check_bytes(pattern, REGEX_MAX_BYTES, field, "regular expression")
    check_no_nul(pattern, field, "regular expression")


def check_generation(
    messages: Sequence[Any], *, tools: Sequence[Tool] = (), constraints: Constraints, stop: Sequence[str] | None
) -> None:
    """The bounds of a chat or generate request, whichever dialect it came in (the field names are Ollama's)."""
    check_count(messages, MAX_MESSAGES, "messages", "messages")
    check_count(tools, MAX_TOOLS, "tools", "tools")
    for i, tool in enumerate(tools):
        check_schema(tool.parameters, f"tools[{i}].function.parameters", grammar=False)
    check_stop(stop)
    check_count(constraints.logit_bias, MAX_LOGIT_BIAS, "logit_bias", "entries")
    check_schema(constraints.format)
    if constraints.grammar:
        check_grammar(constraints.grammar)
