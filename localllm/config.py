"""Settings of the daemon and the CLI, read once from the environment.

Each variable is declared once: the daemon's as a field of `Settings` (`setting(name, default, parser, help)`),
the others' (the CLI's key, huggingface_hub's `HF_*`) in `ELSEWHERE`. `Settings.from_env`, `localllm serve
--help` and README's configuration table (checked by tests/unit/test_config.py) all come from `VARIABLES`.
A value that does not parse raises `ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .domain.errors import ConfigError, InvalidModelName
from .domain.limits import KEEP_ALIVE_MAX_S, PROMPT_CACHE_DISK, size_text
from .domain.names import parse_name
from .domain.types import KV_CACHE_TYPES

DEFAULT_ADDRESS = "127.0.0.1"  # LOCALLLM_HOST's default: loopback only
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
        return HostAddress("http", DEFAULT_ADDRESS, DEFAULT_PORT)
    scheme = "http"
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in {"http", "https"}:
            raise ConfigError(f"{variable}={value!r}: the scheme must be http or https")
    text = text.rstrip("/")
    try:
        parts = urlsplit(f"//{text}")
        host = parts.hostname or DEFAULT_ADDRESS
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
    """Parse a keep-alive: seconds as a number, or a Go duration ("5m", "1h30m"); negative means forever, and
    so does anything longer than Go's longest duration (`KEEP_ALIVE_MAX_S`, ~292 years), as in Ollama. NaN is
    not a duration."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a duration such as '5m' or a number of seconds")
    if isinstance(value, (int, float)):
        return _seconds(float(value), name, value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a duration such as '5m' or a number of seconds")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _seconds(number, name, value)
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
    return math.inf if negative else _seconds(total, name, value)


def _seconds(seconds: float, name: str, value: object) -> float:
    if math.isnan(seconds):
        raise ConfigError(f"{name}={value!r} is not a duration (use e.g. '30s', '5m', '1h', or -1 for forever)")
    return math.inf if seconds < 0 or seconds > KEEP_ALIVE_MAX_S else seconds


def parse_api_keys(value: str) -> tuple[str, ...]:
    """LOCALLLM_API_KEYS: keys separated by commas. Set to anything but an empty string, it must hold a key:
    a value such as " , " is refused, never read as "no keys" (which would turn authentication off)."""
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    if value and not keys:
        raise ConfigError(
            f"LOCALLLM_API_KEYS={value!r} holds no key: give keys separated by commas, or unset it to run without"
        )
    return keys  # their length is checked where they are used (auth.Authenticator: API_KEY_MIN_CHARS)


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


def _keep_alive(text: str, name: str) -> float:
    return parse_duration(text, name=name)


def _duration_where(ok: Callable[[float], bool], hint: str) -> Callable[[str, str], float]:
    def parse(text: str, name: str) -> float:
        seconds = parse_duration(text, name=name)
        if not ok(seconds):
            raise ConfigError(f"{name}={text!r} must be {hint}")
        return seconds

    return parse


_positive_duration = _duration_where(lambda s: 0 < s < math.inf, "a positive duration such as '1h' or '30m'")


def _whole_number(minimum: int) -> Callable[[str, str], int]:
    def parse(text: str, name: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={text!r} must be at least {minimum}")
        return value

    return parse


def _flag(text: str, name: str) -> bool:
    value = text.lower()
    if value not in {"0", "1", "false", "true"}:
        raise ConfigError(f"{name}={text!r} must be 0 or 1")
    return value in {"1", "true"}


_FLASH = {"auto": "auto", "on": "on", "1": "on", "true": "on", "off": "off", "0": "off", "false": "off"}


def _flash_attention(text: str, name: str) -> str:
    value = _FLASH.get(text.lower())
    if value is None:
        raise ConfigError(f"{name}={text!r} must be auto, on or off (or 1 / 0)")
    return value


def _kv_cache_type(text: str, name: str) -> str:
    value = text.lower()
    if value not in KV_CACHE_TYPES:
        raise ConfigError(f"{name}={text!r} must be one of {', '.join(KV_CACHE_TYPES)}")
    return value


def _log_format(text: str, name: str) -> str:
    value = text.lower()
    if value not in {"text", "json"}:
        raise ConfigError(f"{name}={value!r} must be text or json")
    return value


def _replica(text: str, name: str) -> str:
    if text and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise ConfigError(
            f"{name}={text[:80]!r} must be a name of up to 64 letters, digits, '.', '_' or '-' (it is sent in a header)"
        )
    return text


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


def _size(text: str, name: str) -> int:
    return parse_size(text, name=name)


def _cache_ram(text: str, name: str) -> int:
    """LOCALLLM_CACHE_RAM in bytes; -1 for auto (the runner takes a share of the RAM free when it loads)."""
    if text.lower() == "auto":
        return -1
    if text.rstrip("bBiIkKmMgG ") in {"0", "0.0"}:
        return 0
    return parse_size(text, name=name)


def _model(text: str, name: str) -> str | None:
    if not text:
        return None
    try:
        return str(parse_name(text))
    except InvalidModelName as exc:
        raise ConfigError(f"{name}={text!r} is not a model name: {exc}") from None


def _host(text: str, name: str) -> HostAddress:
    return parse_host(text, variable=name)


def _models_dir(text: str, name: str) -> Path:
    return Path(text).expanduser() if text else default_models_dir()


def _optional_path(text: str, name: str) -> Path | None:
    return Path(text).expanduser() if text else None


def _origins(text: str, name: str) -> tuple[str, ...]:
    return parse_origins(text, variable=name)


def _words(text: str, name: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(",") if word.strip())


def _api_keys(text: str, name: str) -> tuple[str, ...]:
    return parse_api_keys(text)


def _rpc_servers(text: str, name: str) -> tuple[str, ...]:
    return parse_rpc_servers(text, name=name)


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
        "LOCALLLM_NUM_THREADS", "0", _whole_number(0), "CPU threads per model (0: llama.cpp's choice)"
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
        "auto",
        _flash_attention,
        "llama.cpp's flash attention: auto (its choice: on for CPU and most GPUs), on, or off (1/0 as Ollama)",
    )
    kv_cache_type: str = setting(  # a model's option overrides it (memory.kv_cache_type_for)
        "LOCALLLM_KV_CACHE_TYPE",
        "f16",
        _kv_cache_type,
        "the KV cache's element type: f16, q8_0 (half the memory) or q4_0 (a quarter), as OLLAMA_KV_CACHE_TYPE; "
        "the quantised ones need flash attention (auto turns it on for them; off refuses them)",
    )
    stream_interval: float = setting(
        "LOCALLLM_STREAM_INTERVAL",
        "25ms",
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
    cache_ram: int = setting(  # bytes of saved KV states per model in RAM; -1: auto; 0: off
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
