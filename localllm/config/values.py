"""The values of the configuration's variables: each parser turns a variable's text into a `Settings` field's
value, or raises `ConfigError` naming the variable. The public ones (`parse_host`, `parse_duration`, ...) also
read the same kinds of value elsewhere (the CLI's host, a request's `keep_alive`)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from ..domain.errors import ConfigError, InvalidModelName
from ..domain.limits import KEEP_ALIVE_MAX_S
from ..domain.names import parse_name
from ..domain.options import CACHE_RAM_AUTO, KV_CACHE_TYPES

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
    """LOCALLLM_CACHE_RAM in bytes; `CACHE_RAM_AUTO` for auto (the runner takes a share of the RAM free when it
    loads)."""
    if text.lower() == "auto":
        return CACHE_RAM_AUTO
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
