"""The typed HTTP client of the localllm daemon (Ollama's native API), over httpx.

Every method raises from one small tree (see `errors.py`):

    ClientError
     ├── ResponseError      the daemon answered with an error status, or a stream ended with {"error": ...}
     └── DaemonNotRunning   nothing answers at the daemon's address

Streaming methods (`pull`, `create`, `generate`, `chat`) are generators: the request is sent when iteration starts,
one dict is yielded per NDJSON line, and closing the generator closes the response.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .config.values import is_loopback_name, parse_host
from .domain.errors import ClientError, DaemonNotRunning, ResponseError

JSONObject = dict[str, Any]
Stream = Generator[JSONObject, None, None]  # NDJSON lines; close() it to close the response early
_JSONList = list[JSONObject]

_CONNECT_TIMEOUT = 10.0
_DEFAULT_READ_TIMEOUT = 60.0
_NDJSON = "application/x-ndjson"
_UPLOAD_CHUNK = 1 << 20


class Client:
    """Talk to the daemon at `host` (default: `LOCALLLM_HOST`, read when the client is made).

    `http` injects the `httpx.Client` to send requests with (tests pass one over `httpx.MockTransport`).
    `timeout` is the read timeout in seconds for every request; by default plain requests wait 60 s and
    streaming ones wait as long as it takes, since loading a large model can take minutes.
    `api_key` (default: `LOCALLLM_API_KEY`) is sent as `Authorization: Bearer <key>` with every request.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
    ):
        if host is None and http is not None and str(http.base_url):
            self.base_url = str(http.base_url).rstrip("/")
        else:
            raw = os.environ.get("LOCALLLM_HOST", "") if host is None else host
            self.base_url = parse_host(raw).base_url
        self._owns_http = http is None
        # Proxy variables must not capture a daemon on this machine (Go skips them for loopback too).
        self._http = http if http is not None else httpx.Client(trust_env=not _is_loopback(self.base_url))
        self._timeout = timeout
        self._api_key = (os.environ.get("LOCALLLM_API_KEY", "") if api_key is None else api_key).strip()

    def close(self) -> None:
        """Close the connection pool, unless it was injected."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    # -- the API ---------------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Check that the daemon answers."""
        self._request("GET", "/")

    def version(self) -> str:
        """The daemon's version."""
        return str(self._request("GET", "/api/version").json()["version"])

    def list(self) -> _JSONList:
        """The local models (`/api/tags`)."""
        models: _JSONList = self._request("GET", "/api/tags").json().get("models") or []
        return models

    def show(self, model: str) -> JSONObject:
        """Everything the daemon knows about a local model (`/api/show`)."""
        info: JSONObject = self._request("POST", "/api/show", json={"model": model}).json()
        return info

    def pull(self, model: str) -> Stream:
        """Download a model, yielding Ollama's progress lines up to `{"status": "success"}`."""
        return self._stream("/api/pull", {"model": model, "stream": True})

    def verify(self, model: str | None = None) -> Stream:
        """Hash the store's blobs again (`/api/verify`): one line a blob, then `{"status": ..., "damaged": [...]}`."""
        return self._stream("/api/verify", {"stream": True, **({"model": model} if model else {})})

    def delete(self, model: str) -> None:
        """Remove a local model."""
        self._request("DELETE", "/api/delete", json={"model": model})

    def copy(self, source: str, destination: str) -> None:
        """Give a local model another name."""
        self._request("POST", "/api/copy", json={"source": source, "destination": destination})

    def ps(self) -> _JSONList:
        """The models loaded in memory now (`/api/ps`)."""
        models: _JSONList = self._request("GET", "/api/ps").json().get("models") or []
        return models

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        format: str | Mapping[str, Any] | None = None,
        images: Sequence[str] | None = None,
    ) -> Stream:
        """Complete `prompt`, yielding `{"response": ...}` chunks and a final `{"done": true, ...}` one.
        `images`: files (images, or audio for an audio model) as base64, Ollama's `images`."""
        body: JSONObject = {"model": model, "prompt": prompt, "stream": True}
        _set(
            body,
            system=system,
            options=options,
            keep_alive=keep_alive,
            format=format,
            images=list(images) if images else None,
        )
        return self._stream("/api/generate", body)

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        format: str | Mapping[str, Any] | None = None,
    ) -> Stream:
        """Answer a conversation, yielding `{"message": {...}}` chunks and a final `{"done": true, ...}` one."""
        body: JSONObject = {"model": model, "messages": [dict(m) for m in messages], "stream": True}
        _set(body, options=options, keep_alive=keep_alive, format=format)
        return self._stream("/api/chat", body)

    def embed(
        self,
        model: str,
        inputs: str | Sequence[str],
        *,
        truncate: bool | None = None,
        dimensions: int | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
    ) -> JSONObject:
        """Embed each input (`/api/embed`): `{"embeddings": [[...], ...], ...}`, one unit vector per input."""
        body: JSONObject = {"model": model, "input": inputs if isinstance(inputs, str) else list(inputs)}
        _set(body, truncate=truncate, dimensions=dimensions, options=options, keep_alive=keep_alive)
        result: JSONObject = self._request("POST", "/api/embed", json=body, wait=True).json()
        return result

    def create(self, request: Mapping[str, Any]) -> Stream:
        """Create a model from Ollama's `/api/create` body (`model`, `from` or `files`, `parameters`, ...),
        yielding its progress lines up to `{"status": "success"}`."""
        return self._stream("/api/create", {**request, "stream": True})

    def has_blob(self, digest: str) -> bool:
        """Whether the daemon holds the blob `sha256:<hex>` (`HEAD /api/blobs/<digest>`)."""
        try:
            self._request("HEAD", f"/api/blobs/{digest}")
        except ResponseError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def create_blob(self, digest: str, path: Path, *, progress: Callable[[int], None] | None = None) -> None:
        """Upload the file at `path` as the blob `digest` (`POST /api/blobs/<digest>`), which the daemon
        keeps only if the bytes hash to `digest`; `progress` is called with each chunk's size as it goes."""

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as file:
                while chunk := file.read(_UPLOAD_CHUNK):
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))

        size = str(path.stat().st_size)
        self._request("POST", f"/api/blobs/{digest}", content=chunks(), headers={"Content-Length": size}, wait=True)

    # -- the wire ---------------------------------------------------------------------------------------

    def _timeout_for(self, *, streaming: bool) -> httpx.Timeout:
        read = self._timeout if self._timeout is not None else (None if streaming else _DEFAULT_READ_TIMEOUT)
        return httpx.Timeout(read, connect=_CONNECT_TIMEOUT)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: JSONObject | None = None,
        content: Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        wait: bool = False,
    ) -> httpx.Response:
        """Send one request; `wait` waits for the answer as long as a stream would (a model may be loading)."""
        url = self.base_url + path
        timeout = self._timeout_for(streaming=wait)
        try:
            response = self._http.request(
                method, url, json=json, content=content, headers=self._headers(headers), timeout=timeout
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        self._check(response)
        return response

    def _stream(self, path: str, body: JSONObject) -> Stream:
        url = self.base_url + path
        try:
            with self._http.stream(
                "POST", url, json=body, headers=self._headers(), timeout=self._timeout_for(streaming=True)
            ) as response:
                if response.is_error:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield _parse_line(line)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str] | None:
        if not self._api_key:
            return dict(extra) if extra is not None else None
        return {**(extra or {}), "Authorization": f"Bearer {self._api_key}"}

    def _check(self, response: httpx.Response) -> None:
        """Raise `ResponseError` for an error status; a 401 says what to do about the key."""
        try:
            _check(response)
        except ResponseError as exc:
            if exc.status_code != 401:
                raise
            if self._api_key:
                message = f"the localllm daemon at {self.base_url} refused the API key (LOCALLLM_API_KEY): {exc}"
            else:
                message = (
                    f"the localllm daemon at {self.base_url} requires an API key: set LOCALLLM_API_KEY "
                    "(its admin makes keys with 'localllm keys create')"
                )
            raise ResponseError(message, 401) from None

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            if _unresolved(exc):
                host = httpx.URL(self.base_url).host
                return DaemonNotRunning(
                    f"could not connect to the localllm daemon at {self.base_url}: no such host {host!r} (the name "
                    "does not resolve): check LOCALLLM_HOST"
                )
            return DaemonNotRunning(
                f"could not connect to the localllm daemon at {self.base_url}: nothing is listening there. "
                f"Start it with 'localllm serve' (or {service_hint()})"
            )
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(f"the localllm daemon at {self.base_url} did not answer in time ({exc})")
        return ClientError(f"lost the connection to the localllm daemon at {self.base_url}: {exc}")


def _unresolved(exc: BaseException) -> bool:
    """Whether a connection failed because the host name does not resolve (not because nothing listens)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def service_hint() -> str:
    """How to start the service install.sh --service writes: a system unit for root, else the user's own."""
    user_unit = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd/user/localllm.service"
    system_unit = Path("/etc/systemd/system/localllm.service")
    if os.geteuid() == 0 or (system_unit.exists() and not user_unit.exists()):
        return "'sudo systemctl start localllm'" if os.geteuid() != 0 else "'systemctl start localllm'"
    return "'systemctl --user start localllm'"


def _is_loopback(base_url: str) -> bool:
    return is_loopback_name(httpx.URL(base_url).host)


def _set(body: JSONObject, **fields: Any) -> None:
    for key, value in fields.items():
        if value is not None:
            body[key] = dict(value) if isinstance(value, Mapping) else value


def _check(response: httpx.Response) -> None:
    if not response.is_error:
        return
    message = ""
    try:
        payload = response.json()
    except ValueError:
        message = response.text.strip()
    else:
        if isinstance(payload, dict) and payload.get("error"):
            message = str(payload["error"])
        else:
            message = response.text.strip()
    raise ResponseError(message or response.reason_phrase or f"HTTP {response.status_code}", response.status_code)


def _parse_line(line: str) -> JSONObject:
    try:
        item = json.loads(line)
    except ValueError:
        raise ClientError(f"the daemon sent a line that is not JSON: {line[:200]!r}") from None
    if not isinstance(item, dict):
        raise ClientError(f"the daemon sent a line that is not a JSON object: {line[:200]!r}")
    if item.get("error"):
        raise ResponseError(str(item["error"]))
    return item
