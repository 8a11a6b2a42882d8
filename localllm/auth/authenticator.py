"""The daemon's side of authentication: which credentials a request may carry, checked against
LOCALLLM_API_KEYS and the keys file (auth/keysfile.py); access tokens for apps (auth/tokens.py); the daily
token counts (auth/quota.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..domain.errors import ConfigError, Unauthorized
from ..domain.limits import API_KEY_MIN_CHARS
from .keysfile import Entry, KeysFile, digest
from .principal import Principal
from .quota import Quotas
from .tokens import TOKEN_PREFIX, AccessToken, sign_token, verify_token

log = logging.getLogger("localllm.keys")


class Authenticator:
    """Check the credentials of requests against LOCALLLM_API_KEYS and the keys file; issue app tokens;
    keep the daily token counts (`quotas`).

    Authentication is on while there are environment keys or the keys file exists. The file is stat'ed on
    each check and read again when it changed; a file that stops parsing keeps the last good contents. With
    `required` (the file was named by LOCALLLM_KEYS_FILE) it must exist at start, and a file removed later
    keeps the keys read before: naming a keys file never turns authentication off.
    """

    def __init__(
        self,
        path: Path | None,
        env_keys: Sequence[str] = (),
        *,
        required: bool = False,
        token_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        short = [i + 1 for i, k in enumerate(env_keys) if len(k) < API_KEY_MIN_CHARS]
        if short:
            which = ", ".join(f"#{i}" for i in short)
            raise ConfigError(
                f"LOCALLLM_API_KEYS: key {which} is shorter than {API_KEY_MIN_CHARS} characters "
                "(make keys with 'localllm keys create', or 'openssl rand -hex 24')"
            )
        self.path = path
        self.required = required
        self.token_ttl = token_ttl
        self.quotas = Quotas(clock)
        self._clock = clock
        salt = secrets.token_hex(16)
        self._env = tuple(
            Entry("key", f"env-{i + 1}", "LOCALLLM_API_KEYS", "", salt, digest(salt, k), None, "")
            for i, k in enumerate(env_keys)
        )
        self._file: KeysFile | None = None
        self._stamp: tuple[int, int, int] | None = None
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

    # -- internals -------------------------------------------------------------------------------------

    def _keys(self) -> tuple[Entry, ...]:
        return tuple(e for e in self._file.entries if e.kind == "key") if self._file is not None else ()

    def _verify_token(self, token: str) -> Principal:
        verified = verify_token(self._file.secret, token) if self._file is not None else None
        if verified is None or self._file is None:
            raise Unauthorized("invalid access token")
        appid, expires = verified
        app = self._file.app(appid)
        if app is None:
            raise Unauthorized(f"the app {appid} of this access token was revoked")
        if expires <= self._clock():
            when = dt.datetime.fromtimestamp(expires, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise Unauthorized(f"the access token expired at {when}: get a new one from GET /api/v1/token")
        return Principal(app.id, app.name, app.quota)

    def _refresh(self, *, startup: bool = False) -> None:
        """Read the keys file again if it changed (or appeared, or went away)."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if startup and self.required:
                raise ConfigError(
                    f"LOCALLLM_KEYS_FILE: the keys file {self.path} does not exist (make it with "
                    "'localllm keys create', or unset LOCALLLM_KEYS_FILE to run without keys)"
                ) from None
            if self.required:
                if self._stamp is not None:
                    log.error("the keys file %s was removed: keeping the keys read before", self.path)
                    self._stamp = None
                return
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
