"""Settings of the daemon and the CLI, read once from the environment.

Each variable is declared once: the daemon's as a field of `Settings` (`setting(name, default, parser, help)`),
the others' (the CLI's key, huggingface_hub's `HF_*`) in `ELSEWHERE`. `Settings.from_env`, `localllm serve
--help` and README's configuration table (checked by tests/unit/test_config.py) all come from `VARIABLES`.
A value that does not parse raises `ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..domain.errors import ConfigError
from ..domain.limits import PROMPT_CACHE_DISK, size_text
from ..domain.options import FLASH_ATTENTION_MODES, KV_CACHE_TYPES, STREAM_INTERVAL, THREADS_AUTO
from .values import (
    DEFAULT_ADDRESS,
    DEFAULT_PORT,
    HostAddress,
    _api_keys,
    _cache_ram,
    _duration_where,
    _flag,
    _flash_attention,
    _host,
    _keep_alive,
    _kv_cache_type,
    _log_format,
    _model,
    _models_dir,
    _optional_path,
    _origins,
    _positive_duration,
    _replica,
    _rpc_servers,
    _size,
    _whole_number,
    keys_file_from_env,
)


@dataclass(frozen=True)
class Variable:
    """One environment variable: declared once, here; `Settings`, `localllm serve --help` and README's
    configuration table (tests/unit/test_config.py holds it to this) come from it."""

    name: str
    default: str  # the text read when the variable is unset or empty: the one place its default is written
    help: str  # a line of `localllm serve --help`
    shown: str = ""  # how --help and README show the default when it is computed at start (e.g. a user's path)
    parse: Callable[[str, str], Any] | None = None  # (text, name) -> the Settings field's value; None: not the daemon's
    reader: str = "daemon"  # what reads it: the daemon (a `Settings` field), "the CLI", "huggingface_hub"

    @property
    def shown_default(self) -> str:
        return self.shown or self.default


_VARIABLE = "localllm.variable"  # the key of a Settings field's Variable in its metadata


def setting(
    name: str, default: str, parse: Callable[[str, str], Any], help: str, *, shown: str = "", secret: bool = False
) -> Any:
    """A `Settings` field read from the variable `name`: `parse(text, name)` turns its text (else `default`) into
    the field's value (or raises `ConfigError` naming the variable), and the field's default is `default` parsed.
    Adding a variable is one such field: its --help line and README row follow from it."""
    variable = Variable(name, default, help, shown=shown, parse=parse)
    return field(default=parse(default, name), repr=not secret, metadata={_VARIABLE: variable})


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from its environment, parsed once at start; each field is one variable."""

    host: HostAddress = setting(
        "LOCALLLM_HOST",
        f"{DEFAULT_ADDRESS}:{DEFAULT_PORT}",
        _host,
        "address the daemon listens on and the CLI talks to",
    )
    models_dir: Path = setting(
        "LOCALLLM_MODELS", "", _models_dir, "directory of the model store", shown="<user data dir>/models"
    )
    keep_alive: float = setting(
        "LOCALLLM_KEEP_ALIVE",
        "5m",
        _keep_alive,
        "how long an idle model stays loaded (e.g. 30s, 10m, 1h; -1 forever; 0 unload)",
    )
    context_length: int = setting(
        "LOCALLLM_CONTEXT_LENGTH",
        "8192",
        _whole_number(16),
        "default context window, capped by the model's trained context and by memory",
    )
    max_loaded_models: int = setting(
        "LOCALLLM_MAX_LOADED_MODELS",
        "3",
        _whole_number(1),
        "most models loaded at once; the least recently used idle one is unloaded",
    )
    num_parallel: int = setting(
        "LOCALLLM_NUM_PARALLEL",
        "4",
        _whole_number(1),
        "requests each model serves at once (sequence slots batched together)",
    )
    max_body: int = setting(
        "LOCALLLM_MAX_BODY",
        "64MiB",
        _size,
        "largest request body accepted (bytes, or with K/M/G/KiB/MiB/GiB); larger gets 413",
    )
    max_queue: int = setting(
        "LOCALLLM_MAX_QUEUE",
        "512",
        _whole_number(1),
        "requests that may wait for a model before new ones get 503 Server Busy",
    )
    max_connections: int = setting(
        "LOCALLLM_MAX_CONNECTIONS",
        "1000",
        _whole_number(1),
        "open HTTP connections (or requests in progress) past which new requests get 503 (the open files allowing)",
    )
    runner_timeout: float = setting(
        "LOCALLLM_RUNNER_TIMEOUT",
        "5m",
        _positive_duration,
        "a model runner silent this long while it has work is stopped (hung)",
    )
    num_threads: int = setting(
        "LOCALLLM_NUM_THREADS",
        str(THREADS_AUTO),
        _whole_number(0),
        f"CPU threads per model ({THREADS_AUTO}: llama.cpp's choice)",
    )
    rpc_servers: tuple[str, ...] = setting(
        "LOCALLLM_RPC_SERVERS",
        "",
        _rpc_servers,
        "llama.cpp RPC workers (`localllm worker`) models are split across, host:port,... (comma-separated); "
        "a model's rpc_servers parameter picks some of them, or none",
    )
    flash_attention: str = setting(
        "LOCALLLM_FLASH_ATTENTION",
        FLASH_ATTENTION_MODES[0],
        _flash_attention,
        "llama.cpp's flash attention: auto (its choice: on for CPU and most GPUs), on, or off (1/0 as Ollama)",
    )
    kv_cache_type: str = setting(  # a model's option overrides it (memory.kv_cache_type_for)
        "LOCALLLM_KV_CACHE_TYPE",
        KV_CACHE_TYPES[0],
        _kv_cache_type,
        "the KV cache's element type: f16, q8_0 (half the memory) or q4_0 (a quarter), as OLLAMA_KV_CACHE_TYPE; "
        "the quantised ones need flash attention (auto turns it on for them; off refuses them)",
    )
    swa_full: bool = setting(  # a model's swa_full option overrides it (service/loadref.py)
        "LOCALLLM_SWA_FULL",
        "0",
        _flag,
        "1 gives sliding-window models (Gemma 2/3, gpt-oss, Cohere2...) a full-size KV cache, as llama-server's "
        "--swa-full: more memory (counted in the estimate), and a slot's cache can be cut back to any prefix",
    )
    stream_interval: float = setting(
        "LOCALLLM_STREAM_INTERVAL",
        f"{STREAM_INTERVAL * 1000:g}ms",
        _duration_where(lambda s: 0 <= s <= 10, "from 0 to 10s, such as '25ms'"),
        "how often a stream's text is sent (first token at once; up to 4x this while several streams share a "
        "model; 0 sends every token)",
    )
    embed_token_ids: bool = setting(
        "LOCALLLM_EMBED_TOKEN_IDS",
        "0",
        _flag,
        "1 lets /v1/embeddings embed token-id input as this model's ids (by default it is refused: clients count "
        "tokens with another tokenizer)",
    )
    allow_image_urls: bool = setting(
        "LOCALLLM_ALLOW_IMAGE_URLS",
        "0",
        _flag,
        "1 lets requests name images by http(s) URL, fetched by the daemon (public addresses only, redirects "
        "checked, 20 MiB and 10 s at most); by default only images sent in the request are taken",
    )
    cache_ram: int = setting(  # bytes of saved KV states per model in RAM; CACHE_RAM_AUTO: auto; 0: off
        "LOCALLLM_CACHE_RAM",
        "auto",
        _cache_ram,
        "RAM for each model's prompt cache beyond its slots: saved KV states of evicted prompts (bytes, or e.g. "
        "512MiB, 8GiB; auto: a quarter of the RAM free when the model loads, at most 8GiB; 0: off)",
    )
    cache_dir: Path | None = setting(
        "LOCALLLM_CACHE_DIR",
        "",
        _optional_path,
        "directory where the prompt cache's states are also written, to outlive a model's unload and a restart "
        "(empty: no disk tier)",
    )
    cache_disk: int = setting(
        "LOCALLLM_CACHE_DISK",
        size_text(PROMPT_CACHE_DISK).replace(" ", ""),
        _size,
        "most bytes the prompt cache keeps in LOCALLLM_CACHE_DIR; the oldest go",
    )
    responses_dir: Path | None = setting(
        "LOCALLLM_RESPONSES_DIR",
        "",
        _optional_path,
        "directory where /v1/responses keeps stored responses, so conversations survive a restart "
        "(unset: in memory only); the same bounds and expiry hold there",
    )
    strict_fields: bool = setting(
        "LOCALLLM_STRICT_FIELDS",
        "0",
        _flag,
        "1 to refuse (400) request fields the daemon does not know; by default they are accepted, logged once "
        "per field and client, and listed in the answer's X-Localllm-Ignored-Fields header (docs/compat.md)",
    )
    max_tokens: int = setting(
        "LOCALLLM_MAX_TOKENS",
        "8192",
        _whole_number(0),
        "tokens an answer may generate when the request sets no bound (0: none, until the context is full); "
        "a request's own max_tokens/num_predict is not cut by it (docs/limits.md)",
    )
    debug: bool = setting("LOCALLLM_DEBUG", "0", _flag, "1 for debug logging")
    log_format: str = setting(
        "LOCALLLM_LOG_FORMAT",
        "text",
        _log_format,
        "text, or json for one JSON object per line (with each request's id)",
    )
    metrics: bool = setting(
        "LOCALLLM_METRICS",
        "0",
        _flag,
        "1 to serve Prometheus metrics at GET /metrics (behind the API key when auth is on)",
    )
    shutdown_grace: float = setting(
        "LOCALLLM_SHUTDOWN_GRACE",
        "5s",
        _duration_where(lambda s: 0 <= s <= 600, "from 0 to 10m, such as '5s'"),
        "on SIGTERM, how long requests in flight may finish; streams still running then end with an error line",
    )
    replica: str = setting(  # "" sends no X-Localllm-Replica header
        "LOCALLLM_REPLICA",
        "",
        _replica,
        "this daemon's name among replicas behind a load balancer, sent back in every answer's "
        "X-Localllm-Replica header (letters, digits, . _ -; none by default)",
    )
    default_model: str | None = setting(
        "LOCALLLM_DEFAULT_MODEL",
        "",
        _model,
        "model for requests that name none (TGI, vLLM, LMDeploy dialects; e.g. huggingface_hub's InferenceClient)",
    )
    origins: tuple[str, ...] = setting(  # browser origins allowed beyond the loopback and app ones
        "LOCALLLM_ORIGINS",
        "",
        _origins,
        "more browser origins allowed (comma-separated, * wildcards, e.g. chrome-extension://*); "
        "loopback and app:// file:// tauri:// vscode-webview:// origins always are",
    )
    api_keys: tuple[str, ...] = setting(
        "LOCALLLM_API_KEYS",
        "",
        _api_keys,
        "API keys every request must carry (comma-separated, each 16+ characters); setting any turns auth on",
        secret=True,  # never logged
    )
    keys_file: Path | None = setting(  # None in a Settings made in code (tests): no keys file
        "LOCALLLM_KEYS_FILE",
        "",
        _optional_path,
        "keys file of `localllm keys` (its existence turns auth on; re-read when it changes; must exist when set)",
        shown="<models dir>/../keys.json",
    )
    # named by LOCALLLM_KEYS_FILE (not just the default): the file must exist, and never turns auth off
    keys_file_required: bool = False
    token_ttl: float = setting(
        "LOCALLLM_TOKEN_TTL",
        "1h",
        _positive_duration,
        "lifetime of the access tokens GET /api/v1/token issues to registered apps",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            if _VARIABLE not in f.metadata:
                continue  # derived from the variables below
            variable: Variable = f.metadata[_VARIABLE]
            assert variable.parse is not None
            values[f.name] = variable.parse(env.get(variable.name, "").strip() or variable.default, variable.name)
        settings = cls(**values)
        if settings.kv_cache_type != "f16" and settings.flash_attention == "off":
            raise ConfigError(
                f"LOCALLLM_KV_CACHE_TYPE={settings.kv_cache_type!r} needs flash attention, but "
                "LOCALLLM_FLASH_ATTENTION is off (set it to auto or on, or use LOCALLLM_KV_CACHE_TYPE=f16)"
            )
        keys_file_required = bool(env.get("LOCALLLM_KEYS_FILE", "").strip())
        return replace(settings, keys_file=keys_file_from_env(env), keys_file_required=keys_file_required)


# Variables others read: listed in --help and README too, never parsed by the daemon.
ELSEWHERE = (
    Variable(
        "LOCALLLM_API_KEY",
        "",
        "the key the CLI sends (Authorization: Bearer); read by the client, not the daemon",
        reader="the CLI",
    ),
    Variable(
        "HF_ENDPOINT",
        "https://huggingface.co",
        "the Hugging Face Hub to pull from (read by huggingface_hub)",
        reader="huggingface_hub",
    ),
    Variable(
        "HF_TOKEN",
        "",
        "token for private or gated Hub repositories (read by huggingface_hub)",
        reader="huggingface_hub",
    ),
    Variable(
        "HF_HOME",
        "~/.cache/huggingface",
        "Hugging Face cache; pulled files are reused from it (read by huggingface_hub)",
        reader="huggingface_hub",
    ),
)

# Every variable, in the order --help and README list them: the daemon's (Settings' fields), then the others'.
VARIABLES: tuple[Variable, ...] = (
    *(f.metadata[_VARIABLE] for f in fields(Settings) if _VARIABLE in f.metadata),
    *ELSEWHERE,
)
