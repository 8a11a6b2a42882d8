"""The keys file: API keys and registered apps, as `localllm keys` writes them and the daemon reads them.

The file is JSON, mode 0600, written whole to a temporary file and renamed into place by `localllm keys`
(the local admin edits it directly; the daemon re-reads it when it changes):

    {
      "version": 1,
      "secret": "<64 hex digits>",       signs the apps' access tokens (HMAC-SHA256, auth/tokens.py)
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
comparison is constant-time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..domain.errors import ConfigError, InvalidRequest

FORMAT_VERSION = 1
KEY_PREFIX = "llk-"
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
        return hmac.compare_digest(digest(self.salt, secret), self.sha256)

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
        entry = Entry(kind, ident, name, "…" + secret[-4:], salt, digest(salt, secret), quota, created)
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


def digest(salt: str, secret: str) -> str:
    """The salted sha256 a key or app secret is stored as."""
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def _check_name(name: str, *, required: bool) -> str:
    name = name.strip()
    if required and not name:
        raise InvalidRequest("an app needs a name", field="name")
    if len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidRequest(f"a name is at most {_NAME_MAX} printable characters", field="name")
    return name
