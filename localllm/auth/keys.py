"""API keys, registered apps, access tokens and daily token quotas: the policy, without HTTP.

The keys file is JSON, mode 0600, written whole to a temporary file and renamed into place by
`localllm keys` (the local admin edits it directly; the daemon re-reads it when it changes):

    {
      "version": 1,
      "secret": "<64 hex digits>",       signs the apps' access tokens (HMAC-SHA256); made with the file
      "keys": [                          API keys, sent as `Authorization: Bearer <key>`
        {"id": "key-1a2b3c4d", "name": "laptop", "hint": "…x9Zq", "salt": "<hex>", "sha256": "<hex>",
         "quota": 100000, "created": "2025-01-31T12:00:00Z"}
      ],
      "apps": [                          apps that trade their secret for access tokens
        {"id": "app-…", "name": "notes", "hint": "…", "salt": "…", "sha256": "<of the app secret>",
         "quota": null, "created": "…"}
      ]
    }

Keys and app secrets are 256-bit random strings, shown once when made and stored only as a salted
sha256: with that much entropy a slow hash adds nothing, and checking a request stays cheap. Every
comparison is constant-time. An access token is

    lltok.<appid>.<expiry in unix seconds>.<base64url HMAC-SHA256(secret, "<appid>.<expiry>")>

so the daemon checks it without storing it, and revoking the app (or a new secret) voids it.

Quotas count prompt and completion tokens per UTC day in the daemon's memory (a restart forgets today's
counts). The service reports usage through `check_quota()` and `charge()`, which act on the key the
current request came with (`metering`, set by the server's auth middleware); outside a request they do
nothing.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..domain.errors import ConfigError, InvalidRequest, QuotaExceeded, Unauthorized

log = logging.getLogger("localllm.keys")

FORMAT_VERSION = 1
KEY_PREFIX = "llk-"
TOKEN_PREFIX = "lltok."
_NAME_MAX = 64

Kind = Literal["key", "app"]
T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One API key or registered app as stored: its secret only as a salted hash."""

    kind: Kind
    id: str
    name: str
    hint: str  # the last characters of the key, to tell keys apart in `localllm keys list`
    salt: str
    sha256: str
    quota: int | None
    created: str

    def matches(self, secret: str) -> bool:
        """Whether `secret` is this entry's key or app secret (constant-time)."""
        return hmac.compare_digest(_digest(self.salt, secret), self.sha256)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint,
            "salt": self.salt,
            "sha256": self.sha256,
            "quota": self.quota,
            "created": self.created,
        }


@dataclass(frozen=True)
class KeysFile:
    """The contents of the keys file; `localllm keys` changes it through `edit`, the daemon reads it."""

    secret: str
    entries: tuple[Entry, ...] = ()

    @classmethod
    def empty(cls) -> KeysFile:
        return cls(secret=secrets.token_hex(32))

    @classmethod
    def load(cls, path: Path) -> KeysFile:
        """Read `path`; `ConfigError` naming it when it cannot be read or is not a keys file."""
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the keys file {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"the keys file {path} is not valid JSON: {exc}") from None
        try:
            return cls._parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the keys file {path} is malformed ({exc}): fix it or remove it") from None

    @classmethod
    def _parse(cls, data: Any) -> KeysFile:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {FORMAT_VERSION}")
        secret = data["secret"]
        if not isinstance(secret, str) or len(secret) < 32 or len(bytes.fromhex(secret)) < 16:
            raise ValueError("secret must be at least 32 hexadecimal digits")
        entries: list[Entry] = []
        sections: tuple[tuple[Kind, str], ...] = (("key", "keys"), ("app", "apps"))
        for kind, field in sections:
            for item in data.get(field) or []:
                quota = item.get("quota")
                if quota is not None and (not isinstance(quota, int) or isinstance(quota, bool) or quota < 1):
                    raise ValueError(f"{item.get('id')}: quota must be a positive whole number or null")
                text = {k: item[k] for k in ("id", "salt", "sha256")}
                if not all(isinstance(v, str) and v for v in text.values()):
                    raise ValueError(f"{field}: id, salt and sha256 must be strings")
                entries.append(
                    Entry(
                        kind,
                        text["id"],
                        str(item.get("name") or ""),
                        str(item.get("hint") or ""),
                        text["salt"],
                        text["sha256"],
                        quota,
                        str(item.get("created") or ""),
                    )
                )
        return cls(secret, tuple(entries))

    def as_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "secret": self.secret,
            "keys": [e.as_json() for e in self.entries if e.kind == "key"],
            "apps": [e.as_json() for e in self.entries if e.kind == "app"],
        }

    def save(self, path: Path) -> None:
        """Write the file atomically with mode 0600 (owned by the directory's owner when root writes it,
        so that the service user can read a file root made for it)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp makes it 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.as_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                owner = path.parent.stat()
                os.chown(tmp, owner.st_uid, owner.st_gid)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def create(self, kind: Kind, name: str, *, quota: int | None = None) -> tuple[KeysFile, tuple[Entry, str]]:
        """A copy with a new key or app, and the entry with its key or app secret (to show once)."""
        name = _check_name(name, required=kind == "app")
        if quota is not None and quota < 1:
            raise InvalidRequest("the quota must be at least 1 token a day", field="quota")
        if name and any(e.name == name and e.kind == kind for e in self.entries):
            raise InvalidRequest(f"there is already a {kind} named {name!r}", field="name")
        taken = {e.id for e in self.entries}
        while True:
            ident = f"key-{secrets.token_hex(4)}" if kind == "key" else f"app-{secrets.token_hex(8)}"
            if ident not in taken:
                break
        secret = (KEY_PREFIX if kind == "key" else "") + secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = Entry(kind, ident, name, "…" + secret[-4:], salt, _digest(salt, secret), quota, created)
        return replace(self, entries=(*self.entries, entry)), (entry, secret)

    def revoke(self, ident: str) -> tuple[KeysFile, Entry]:
        """A copy without the key or app whose id (or else unique name) is `ident`."""
        found = [e for e in self.entries if e.id == ident] or [e for e in self.entries if e.name and e.name == ident]
        if not found:
            raise InvalidRequest(f"no key or app with the id or name {ident!r} ('localllm keys list' shows them)")
        if len(found) > 1:
            ids = ", ".join(e.id for e in found)
            raise InvalidRequest(f"{len(found)} entries are named {ident!r} ({ids}): revoke one by its id")
        gone = found[0]
        return replace(self, entries=tuple(e for e in self.entries if e is not gone)), gone

    def app(self, appid: str) -> Entry | None:
        return next((e for e in self.entries if e.kind == "app" and e.id == appid), None)


def update(path: Path, change: Callable[[KeysFile], tuple[KeysFile, T]]) -> T:
    """Apply `change` to the keys file (an empty one if there is none yet), save what it returns, and
    return its result. A lock (`<file>.lock`) keeps two `localllm keys` commands from losing a change."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        new, result = change(KeysFile.load(path) if path.exists() else KeysFile.empty())
        new.save(path)
        return result


# -- the daemon's side -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: an API key, an app (by its access token), or a LOCALLLM_API_KEYS entry."""

    id: str
    name: str
    quota: int | None = None

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: int  # unix seconds


class Authenticator:
    """Check the credentials of requests against LOCALLLM_API_KEYS and the keys file; issue app tokens;
    keep the daily token counts.

    Authentication is on while there are environment keys or the keys file exists. The file is stat'ed on
    each check and read again when it changed; a file that stops parsing keeps the last good contents.
    """

    def __init__(
        self,
        path: Path | None,
        env_keys: Sequence[str] = (),
        *,
        token_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.token_ttl = token_ttl
        self._clock = clock
        salt = secrets.token_hex(16)
        self._env = tuple(
            Entry("key", f"env-{i + 1}", "LOCALLLM_API_KEYS", "", salt, _digest(salt, k), None, "")
            for i, k in enumerate(env_keys)
        )
        self._file: KeysFile | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._used: dict[str, tuple[dt.date, int]] = {}
        self._refresh(startup=True)

    @property
    def enabled(self) -> bool:
        """Whether requests need a key now (environment keys, or a keys file that exists)."""
        self._refresh()
        return bool(self._env) or self._file is not None

    def describe(self) -> str:
        """A line for the log: where keys come from."""
        parts = []
        if self._env:
            parts.append(f"{len(self._env)} from LOCALLLM_API_KEYS")
        if self._file is not None:
            keys = sum(e.kind == "key" for e in self._file.entries)
            apps = sum(e.kind == "app" for e in self._file.entries)
            parts.append(f"{keys} keys and {apps} apps in {self.path}")
        return ", ".join(parts) if parts else "off"

    def authenticate(self, credential: str | None) -> Principal:
        """The principal of an API key or access token; `Unauthorized` saying what is wrong otherwise."""
        self._refresh()
        if not credential:
            raise Unauthorized(
                "this localllm daemon requires an API key: send 'Authorization: Bearer <key>' "
                "(or 'x-api-key: <key>', or ?accessToken=<token>); the CLI sends LOCALLLM_API_KEY"
            )
        if credential.startswith(TOKEN_PREFIX):
            return self._verify_token(credential)
        match: Entry | None = None
        for entry in (*self._env, *self._keys()):  # check every one, so timing tells nothing
            if entry.matches(credential) and match is None:
                match = entry
        if match is None:
            raise Unauthorized("invalid API key")
        return Principal(match.id, match.name, match.quota)

    def issue_token(self, appid: str, secret: str) -> AccessToken:
        """An access token for a registered app that proves its secret."""
        self._refresh()
        app = self._file.app(appid) if self._file is not None else None
        if app is None or self._file is None or not app.matches(secret):
            raise Unauthorized("wrong appid or secret (register an app with 'localllm keys create --app NAME')")
        expires = math.ceil(self._clock() + self.token_ttl)  # valid for at least the whole lifetime
        return AccessToken(sign_token(self._file.secret, appid, expires), expires)

    def check_quota(self, principal: Principal) -> None:
        """`QuotaExceeded` when the principal's tokens for today reach its daily quota."""
        if principal.quota is None:
            return
        used = self.used_today(principal)
        if used >= principal.quota:
            now = dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc)
            midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
            raise QuotaExceeded(
                f"the daily quota of {principal.quota} tokens of {principal.label} is used up "
                f"({used} tokens today); it renews at 00:00 UTC",
                retry_after=max(1, int((midnight - now).total_seconds())),
            )

    def charge(self, principal: Principal, tokens: int) -> None:
        """Count `tokens` (prompt and completion) against the principal's day."""
        today = self._today()
        with self._lock:
            day, used = self._used.get(principal.id, (today, 0))
            self._used[principal.id] = (today, (used if day == today else 0) + max(0, tokens))

    def used_today(self, principal: Principal) -> int:
        today = self._today()
        with self._lock:
            day, used = self._used.get(principal.id, (today, 0))
        return used if day == today else 0

    # -- internals -------------------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc).date()

    def _keys(self) -> tuple[Entry, ...]:
        return tuple(e for e in self._file.entries if e.kind == "key") if self._file is not None else ()

    def _verify_token(self, token: str) -> Principal:
        parts = token[len(TOKEN_PREFIX) :].split(".")
        if len(parts) != 3 or not parts[1].isdigit() or self._file is None:
            raise Unauthorized("invalid access token")
        appid, expires, _ = parts
        expected = sign_token(self._file.secret, appid, int(expires))
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise Unauthorized("invalid access token")
        app = self._file.app(appid)
        if app is None:
            raise Unauthorized(f"the app {appid} of this access token was revoked")
        if int(expires) <= self._clock():
            when = dt.datetime.fromtimestamp(int(expires), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise Unauthorized(f"the access token expired at {when}: get a new one from GET /api/v1/token")
        return Principal(app.id, app.name, app.quota)

    def _refresh(self, *, startup: bool = False) -> None:
        """Read the keys file again if it changed (or appeared, or went away)."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._file is not None:
                log.warning("the keys file %s was removed: %s", self.path, self._off_or_env())
            self._file, self._stamp = None, None
            return
        except OSError as exc:
            if startup:
                raise ConfigError(f"cannot read the keys file {self.path}: {exc.strerror or exc}") from None
            log.error("cannot read the keys file %s (%s); keeping the keys read before", self.path, exc)
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            loaded = KeysFile.load(self.path)
        except ConfigError as exc:
            if startup:
                raise
            log.error("%s; keeping the keys read before", exc)
            if self._file is None:  # it exists, so authentication is on: refuse rather than open up
                self._file = KeysFile.empty()
            self._stamp = stamp
            return
        if st.st_mode & 0o077:
            log.warning("the keys file %s can be read by others (mode %o): chmod 600 it", self.path, st.st_mode & 0o777)
        if not startup:
            log.info("read the keys file %s again", self.path)
        self._file, self._stamp = loaded, stamp

    def _off_or_env(self) -> str:
        return "only LOCALLLM_API_KEYS are accepted now" if self._env else "authentication is off"


def sign_token(secret: str, appid: str, expires: int) -> str:
    """The access token of `appid` valid until `expires` (unix seconds), signed with the file's secret."""
    mac = hmac.new(bytes.fromhex(secret), f"{appid}.{expires}".encode(), hashlib.sha256).digest()
    return f"{TOKEN_PREFIX}{appid}.{expires}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


# -- usage accounting for the request being served ---------------------------------------------------------


@dataclass(frozen=True)
class Meter:
    """The authenticator and principal of the current request, for quota checks and usage counts."""

    authenticator: Authenticator
    principal: Principal


_current: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("localllm_meter", default=None)


@contextlib.contextmanager
def metering(meter: Meter) -> Iterator[None]:
    """Charge the usage of everything this request does (tasks it starts included) to `meter`."""
    token = _current.set(meter)
    try:
        yield
    finally:
        _current.reset(token)


def check_quota() -> None:
    """`QuotaExceeded` when the current request's key has used up its daily quota."""
    meter = _current.get()
    if meter is not None:
        meter.authenticator.check_quota(meter.principal)


def charge(tokens: int) -> None:
    """Count `tokens` against the current request's key (nothing outside an authenticated request)."""
    meter = _current.get()
    if meter is not None:
        meter.authenticator.charge(meter.principal, tokens)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def _check_name(name: str, *, required: bool) -> str:
    name = name.strip()
    if required and not name:
        raise InvalidRequest("an app needs a name", field="name")
    if len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidRequest(f"a name is at most {_NAME_MAX} printable characters", field="name")
    return name
