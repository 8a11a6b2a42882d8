"""Settings of the daemon and the CLI, read once from the environment.

Every variable is `LOCALLLM_*` and listed in `VARIABLES` with its default and a help line, which
`localllm serve --help` prints. A value that does not parse raises `ConfigError` naming the variable.
The Hugging Face variables (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`) are honoured by huggingface_hub itself.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from .domain.errors import ConfigError, InvalidModelName
from .domain.limits import MAX_CONNECTIONS, PROMPT_CACHE_DISK
from .domain.names import parse_name
from .domain.types import KV_CACHE_TYPES

DEFAULT_PORT = 11434
APP_NAME = "localllm"


def default_models_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "models"


def state_dir() -> Path:
    """Where the CLI keeps its history and other per-user state."""
    return Path(platformdirs.user_state_dir(APP_NAME))


SYSTEM_DATA_DIR = Path("/var/lib/localllm")  # the home of the system service's user (install.sh --service as root)


def keys_file_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The keys file the daemon reads and `localllm keys` edits: `LOCALLLM_KEYS_FILE`, else `keys.json`
    beside the models directory (for root with no LOCALLLM_MODELS: /var/lib/localllm, the system service's)."""
    env = os.environ if environ is None else environ
    explicit = env.get("LOCALLLM_KEYS_FILE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    models = env.get("LOCALLLM_MODELS", "").strip()
    if models:
        return Path(models).expanduser().parent / "keys.json"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and SYSTEM_DATA_DIR.is_dir():
        return SYSTEM_DATA_DIR / "keys.json"
    return default_models_dir().parent / "keys.json"


# name: (default shown in --help, help line)
VARIABLES: dict[str, tuple[str, str]] = {
    "LOCALLLM_HOST": (f"127.0.0.1:{DEFAULT_PORT}", "address the daemon listens on and the CLI talks to"),
    "LOCALLLM_MODELS": ("<user data dir>/models", "directory of the model store"),
    "LOCALLLM_KEEP_ALIVE": ("5m", "how long an idle model stays loaded (e.g. 30s, 10m, 1h; -1 forever; 0 unload)"),
    "LOCALLLM_CONTEXT_LENGTH": ("8192", "default context window, capped by the model's trained context and by memory"),
    "LOCALLLM_NUM_PARALLEL": ("4", "requests each model serves at once (sequence slots batched together)"),
    "LOCALLLM_MAX_QUEUE": ("512", "requests that may wait for a model before new ones get 503 Server Busy"),
    "LOCALLLM_MAX_CONNECTIONS": (
        str(MAX_CONNECTIONS),
        "open HTTP connections (or requests in progress) past which new requests get 503 (the open files allowing)",
    ),
    "LOCALLLM_MAX_BODY": ("64MiB", "largest request body accepted (bytes, or with K/M/G/KiB/MiB/GiB); larger gets 413"),
    "LOCALLLM_MAX_LOADED_MODELS": ("3", "most models loaded at once; the least recently used idle one is unloaded"),
    "LOCALLLM_NUM_THREADS": ("0", "CPU threads per model (0: llama.cpp's choice)"),
    "LOCALLLM_RUNNER_TIMEOUT": ("5m", "a model runner silent this long while it has work is stopped (hung)"),
    "LOCALLLM_FLASH_ATTENTION": (
        "auto",
        "llama.cpp's flash attention: auto (its choice: on for CPU and most GPUs), on, or off (1/0 as Ollama)",
    ),
    "LOCALLLM_KV_CACHE_TYPE": (
        "f16",
        "the KV cache's element type: f16, q8_0 (half the memory) or q4_0 (a quarter), as OLLAMA_KV_CACHE_TYPE; "
        "the quantised ones need flash attention (auto turns it on for them; off refuses them)",
    ),
    "LOCALLLM_STREAM_INTERVAL": (
        "25ms",
        "how often a stream's text is sent (first token at once; up to 4x this while several streams share a "
        "model; 0 sends every token)",
    ),
    "LOCALLLM_DEFAULT_MODEL": (
        "",
        "model for requests that name none (TGI, vLLM, LMDeploy dialects; e.g. huggingface_hub's InferenceClient)",
    ),
    "LOCALLLM_EMBED_TOKEN_IDS": (
        "0",
        "1 lets /v1/embeddings embed token-id input as this model's ids (by default it is refused: clients count "
        "tokens with another tokenizer)",
    ),
    "LOCALLLM_CACHE_RAM": (
        "auto",
        "RAM for each model's prompt cache beyond its slots: saved KV states of evicted prompts (bytes, or e.g. "
        "512MiB, 8GiB; auto: a quarter of the RAM free when the model loads, at most 8GiB; 0: off)",
    ),
    "LOCALLLM_CACHE_DIR": (
        "",
        "directory where the prompt cache's states are also written, to outlive a model's unload and a restart "
        "(empty: no disk tier)",
    ),
    "LOCALLLM_CACHE_DISK": ("16GiB", "most bytes the prompt cache keeps in LOCALLLM_CACHE_DIR; the oldest go"),
    "LOCALLLM_RESPONSES_DIR": (
        "",
        "directory where /v1/responses keeps stored responses, so conversations survive a restart "
        "(unset: in memory only); the same bounds and expiry hold there",
    ),
    "LOCALLLM_RPC_SERVERS": (
        "",
        "llama.cpp RPC workers (`localllm worker`) models are split across, host:port,... (comma-separated); "
        "a model's rpc_servers parameter picks some of them, or none",
    ),
    "LOCALLLM_DEBUG": ("0", "1 for debug logging"),
    "LOCALLLM_LOG_FORMAT": ("text", "text, or json for one JSON object per line (with each request's id)"),
    "LOCALLLM_SHUTDOWN_GRACE": (
        "5s",
        "on SIGTERM, how long requests in flight may finish; streams still running then end with an error line",
    ),
    "LOCALLLM_REPLICA": (
        "",
        "this daemon's name among replicas behind a load balancer, sent back in every answer's "
        "X-Localllm-Replica header (letters, digits, . _ -; none by default)",
    ),
    "LOCALLLM_METRICS": ("0", "1 to serve Prometheus metrics at GET /metrics (behind the API key when auth is on)"),
    "LOCALLLM_ORIGINS": (
        "",
        "more browser origins allowed (comma-separated, * wildcards, e.g. chrome-extension://*); "
        "loopback and app:// file:// tauri:// vscode-webview:// origins always are",
    ),
    "LOCALLLM_API_KEYS": ("", "API keys every request must carry (comma-separated); setting any turns auth on"),
    "LOCALLLM_KEYS_FILE": (
        "<models dir>/../keys.json",
        "keys file of `localllm keys` (its existence turns auth on; re-read when it changes)",
    ),
    "LOCALLLM_TOKEN_TTL": ("1h", "lifetime of the access tokens GET /api/v1/token issues to registered apps"),
    "LOCALLLM_API_KEY": ("", "the key the CLI sends (Authorization: Bearer); read by the client, not the daemon"),
    "HF_ENDPOINT": ("https://huggingface.co", "the Hugging Face Hub to pull from (read by huggingface_hub)"),
    "HF_TOKEN": ("", "token for private or gated Hub repositories (read by huggingface_hub)"),
    "HF_HOME": (
        "~/.cache/huggingface",
        "Hugging Face cache; pulled files are reused from it (read by huggingface_hub)",
    ),
}


@dataclass(frozen=True)
class HostAddress:
    scheme: str
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_host(value: str, *, variable: str = "LOCALLLM_HOST") -> HostAddress:
    """Parse `host`, `host:port`, `:port` or `http(s)://host[:port]` the way Ollama reads OLLAMA_HOST."""
    text = value.strip().strip("\"'")
    if not text:
        return HostAddress("http", "127.0.0.1", DEFAULT_PORT)
    scheme = "http"
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in {"http", "https"}:
            raise ConfigError(f"{variable}={value!r}: the scheme must be http or https")
    text = text.rstrip("/")
    try:
        parts = urlsplit(f"//{text}")
        host = parts.hostname or "127.0.0.1"
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{variable}={value!r}: {exc}") from None
    if parts.path or parts.query:
        raise ConfigError(f"{variable}={value!r}: expected host[:port]")
    if port is None:
        port = {"https": 443, "http": 80}[scheme] if "://" in value else DEFAULT_PORT
    return HostAddress(scheme, host, port)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object, *, name: str) -> float:
    """Parse a keep-alive: seconds as a number, or a Go duration ("5m", "1h30m"); negative means forever."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a duration such as '5m' or a number of seconds")
    if isinstance(value, (int, float)):
        return math.inf if value < 0 else float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a duration such as '5m' or a number of seconds")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return math.inf if number < 0 else number
    negative = text.startswith("-")
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ConfigError(f"{name}={value!r} is not a duration (use e.g. '30s', '5m', '1h', or -1 for forever)")
    return math.inf if negative else total


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://\S*")


def parse_origins(value: str, *, variable: str = "LOCALLLM_ORIGINS") -> tuple[str, ...]:
    """Split a comma list of origins (`scheme://host[:port]`, `*` wildcards anywhere, or `*` alone)."""
    origins = []
    for item in value.split(","):
        origin = item.strip().strip("\"'").lower().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"{variable}: {item.strip()!r} is not an origin: write scheme://host[:port] (* wildcards allowed), "
                "e.g. https://example.org or chrome-extension://*"
            )
        origins.append(origin)
    return tuple(origins)


def is_loopback_name(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always the loopback
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of an RPC worker's `host:port` (`[v6]:port` for IPv6); ValueError if it is not one."""
    host, sep, port = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in " /,[]"):
        raise ValueError(f"{endpoint!r} is not host:port")
    return host, int(port)


def parse_rpc_servers(value: str, *, name: str = "LOCALLLM_RPC_SERVERS") -> tuple[str, ...]:
    """The `host:port` endpoints of a comma list (blanks and repeats dropped), each checked; `ConfigError`
    naming `name` and the item when one is not host:port. "none" (or nothing) is no servers."""
    if value.strip().lower() == "none":
        return ()
    servers: list[str] = []
    for item in value.split(","):
        endpoint = item.strip()
        if not endpoint:
            continue
        try:
            split_endpoint(endpoint)
        except ValueError:
            raise ConfigError(f"{name}: {endpoint!r} is not host:port (e.g. 192.168.1.20:50052)") from None
        if endpoint not in servers:
            servers.append(endpoint)
    return tuple(servers)


def _positive_duration(environ: Mapping[str, str], name: str, default: str) -> float:
    return _duration(
        environ, name, default, ok=lambda s: 0 < s < math.inf, hint="a positive duration such as '1h' or '30m'"
    )


def _duration(environ: Mapping[str, str], name: str, default: str, *, ok: Callable[[float], bool], hint: str) -> float:
    raw = environ.get(name, "").strip() or default
    seconds = parse_duration(raw, name=name)
    if not ok(seconds):
        raise ConfigError(f"{name}={raw!r} must be {hint}")
    return seconds


_FLASH = {"auto": "auto", "": "auto", "on": "on", "1": "on", "true": "on", "off": "off", "0": "off", "false": "off"}


def _flash_attention(environ: Mapping[str, str]) -> str:
    raw = environ.get("LOCALLLM_FLASH_ATTENTION", "").strip()
    value = _FLASH.get(raw.lower())
    if value is None:
        raise ConfigError(f"LOCALLLM_FLASH_ATTENTION={raw!r} must be auto, on or off (or 1 / 0)")
    return value


def _kv_cache_type(environ: Mapping[str, str], flash_attention: str) -> str:
    raw = environ.get("LOCALLLM_KV_CACHE_TYPE", "").strip()
    value = raw.lower() or "f16"
    if value not in KV_CACHE_TYPES:
        raise ConfigError(f"LOCALLLM_KV_CACHE_TYPE={raw!r} must be one of {', '.join(KV_CACHE_TYPES)}")
    if value != "f16" and flash_attention == "off":
        raise ConfigError(
            f"LOCALLLM_KV_CACHE_TYPE={raw!r} needs flash attention, but LOCALLLM_FLASH_ATTENTION is off "
            "(set it to auto or on, or use LOCALLLM_KV_CACHE_TYPE=f16)"
        )
    return value


def _log_format(environ: Mapping[str, str]) -> str:
    raw = environ.get("LOCALLLM_LOG_FORMAT", "").strip().lower() or "text"
    if raw not in {"text", "json"}:
        raise ConfigError(f"LOCALLLM_LOG_FORMAT={raw!r} must be text or json")
    return raw


def _replica(environ: Mapping[str, str]) -> str:
    raw = environ.get("LOCALLLM_REPLICA", "").strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", raw):
        raise ConfigError(
            f"LOCALLLM_REPLICA={raw[:80]!r} must be a name of up to 64 letters, digits, '.', '_' or '-' "
            "(it is sent in a header)"
        )
    return raw


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw not in {"", "0", "1", "false", "true"}:
        raise ConfigError(f"{name}={raw!r} must be 0 or 1")
    return raw in {"1", "true"}


def _int(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
_SIZE_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(value: str, *, name: str) -> int:
    """A byte count such as `1048576`, `512KiB`, `64MiB` or `1G` (K, M, G are powers of 1000)."""
    raw = value.strip()
    number = raw.rstrip("bBiIkKmMgG ")
    unit = raw[len(number) :].strip().lower()
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a size such as 1048576, 512KiB or 64MiB") from None
    if unit not in _SIZE_UNITS or not math.isfinite(amount) or amount < 1:
        raise ConfigError(f"{name}={value!r} is not a size such as 1048576, 512KiB or 64MiB")
    return int(amount * _SIZE_UNITS[unit])


def _cache_ram(environ: Mapping[str, str]) -> int:
    """LOCALLLM_CACHE_RAM in bytes; -1 for auto (the runner takes a share of the RAM free when it loads)."""
    raw = environ.get("LOCALLLM_CACHE_RAM", "").strip()
    if raw.lower() in {"", "auto"}:
        return -1
    if raw.rstrip("bBiIkKmMgG ") in {"0", "0.0"}:
        return 0
    return parse_size(raw, name="LOCALLLM_CACHE_RAM")


def _model(environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return str(parse_name(raw))
    except InvalidModelName as exc:
        raise ConfigError(f"{name}={raw!r} is not a model name: {exc}") from None


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from its environment, parsed once at start."""

    host: HostAddress
    models_dir: Path
    keep_alive: float = 300.0
    runner_timeout: float = 300.0  # seconds without a word from a busy runner before it is stopped as hung
    context_length: int = 8192
    max_loaded_models: int = 3
    num_parallel: int = 4
    max_queue: int = 512
    max_connections: int = MAX_CONNECTIONS  # open connections past which requests get 503
    num_threads: int = 0
    debug: bool = False
    origins: tuple[str, ...] = ()  # browser origins allowed beyond the loopback and app ones
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # LOCALLLM_API_KEYS; never logged
    keys_file: Path | None = None  # None: no keys file (a Settings made in code, for tests)
    token_ttl: float = 3600.0  # seconds an app's access token lives
    default_model: str | None = None  # for the dialects whose requests may name no model
    max_body: int = 64 << 20  # bytes: a larger request body is refused with 413
    stream_interval: float = 0.025  # seconds between a stream's text messages (first token at once)
    flash_attention: str = "auto"  # "auto", "on" or "off"
    kv_cache_type: str = "f16"  # "f16", "q8_0" or "q4_0"; a model's option overrides it (memory.kv_cache_type_for)
    embed_token_ids: bool = False  # /v1/embeddings embeds token-id input (else a 400: send text)
    responses_dir: Path | None = None  # where stored responses are kept too (None: in memory only)
    log_format: str = "text"  # "text" or "json" (one object per line)
    metrics: bool = False  # serve GET /metrics
    shutdown_grace: float = 5.0  # seconds requests in flight get to finish after SIGTERM
    cache_ram: int = -1  # bytes of saved KV states per model in RAM; -1: auto; 0: off
    cache_dir: Path | None = None  # the prompt cache's disk tier (None: none)
    cache_disk: int = PROMPT_CACHE_DISK  # its bound in bytes
    replica: str = ""  # LOCALLLM_REPLICA: this daemon's name in the X-Localllm-Replica header ("" sends none)
    rpc_servers: tuple[str, ...] = ()  # llama.cpp RPC workers models are split across (host:port)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        models = env.get("LOCALLLM_MODELS", "").strip()
        debug = _flag(env, "LOCALLLM_DEBUG")
        flash = _flash_attention(env)
        return cls(
            host=parse_host(env.get("LOCALLLM_HOST", "")),
            models_dir=Path(models).expanduser() if models else default_models_dir(),
            keep_alive=parse_duration(env.get("LOCALLLM_KEEP_ALIVE", "5m") or "5m", name="LOCALLLM_KEEP_ALIVE"),
            runner_timeout=_positive_duration(env, "LOCALLLM_RUNNER_TIMEOUT", "5m"),
            context_length=_int(env, "LOCALLLM_CONTEXT_LENGTH", 8192, minimum=16),
            max_loaded_models=_int(env, "LOCALLLM_MAX_LOADED_MODELS", 3, minimum=1),
            num_parallel=_int(env, "LOCALLLM_NUM_PARALLEL", 4, minimum=1),
            max_queue=_int(env, "LOCALLLM_MAX_QUEUE", 512, minimum=1),
            max_connections=_int(env, "LOCALLLM_MAX_CONNECTIONS", MAX_CONNECTIONS, minimum=1),
            num_threads=_int(env, "LOCALLLM_NUM_THREADS", 0, minimum=0),
            debug=debug,
            origins=parse_origins(env.get("LOCALLLM_ORIGINS", "")),
            api_keys=tuple(k.strip() for k in env.get("LOCALLLM_API_KEYS", "").split(",") if k.strip()),
            keys_file=keys_file_from_env(env),
            token_ttl=_positive_duration(env, "LOCALLLM_TOKEN_TTL", "1h"),
            default_model=_model(env, "LOCALLLM_DEFAULT_MODEL"),
            max_body=parse_size(env.get("LOCALLLM_MAX_BODY", "").strip() or "64MiB", name="LOCALLLM_MAX_BODY"),
            stream_interval=_duration(
                env, "LOCALLLM_STREAM_INTERVAL", "25ms", ok=lambda s: 0 <= s <= 10, hint="from 0 to 10s, such as '25ms'"
            ),
            flash_attention=flash,
            kv_cache_type=_kv_cache_type(env, flash),
            embed_token_ids=_flag(env, "LOCALLLM_EMBED_TOKEN_IDS"),
            responses_dir=Path(d).expanduser() if (d := env.get("LOCALLLM_RESPONSES_DIR", "").strip()) else None,
            log_format=_log_format(env),
            metrics=_flag(env, "LOCALLLM_METRICS"),
            shutdown_grace=_duration(
                env, "LOCALLLM_SHUTDOWN_GRACE", "5s", ok=lambda s: 0 <= s <= 600, hint="from 0 to 10m, such as '5s'"
            ),
            cache_ram=_cache_ram(env),
            cache_dir=Path(cache_dir).expanduser()
            if (cache_dir := env.get("LOCALLLM_CACHE_DIR", "").strip())
            else None,
            cache_disk=parse_size(env.get("LOCALLLM_CACHE_DISK", "").strip() or "16GiB", name="LOCALLLM_CACHE_DISK"),
            replica=_replica(env),
            rpc_servers=parse_rpc_servers(env.get("LOCALLLM_RPC_SERVERS", "")),
        )
