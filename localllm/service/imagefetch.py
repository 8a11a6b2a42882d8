"""Remote images (`http(s)` URLs in `image_url`, Anthropic's `{"type": "url"}` source, Responses'
`input_image`), fetched only where the operator allows it (LOCALLLM_ALLOW_IMAGE_URLS=1).

A daemon that fetches URLs for its clients is a request-forgery hole: a client could make it read the
machine's own services, the cloud metadata address or the private network. So a fetch connects only to the
public addresses its host resolves to (every one checked, the connection made to the checked address, so a
second lookup cannot answer differently), follows at most `IMAGE_URL_REDIRECTS` redirects with each hop's
address checked again, reads at most `IMAGE_MAX_BYTES`, and ends within `IMAGE_URL_SECONDS` over all hops. It
runs in a worker thread, off the event loop. Any refusal is an `InvalidRequest` naming the request's field
and the URL refused.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from ..domain import limits
from ..domain.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def public(address: IPAddress) -> bool:
    """An address on the public internet: not loopback, private, link-local, shared (CGNAT), multicast,
    reserved or unspecified (an IPv4-mapped IPv6 address as its IPv4 one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (what the connection may go to)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch(
    url: str,
    field: str,
    *,
    allowed: Callable[[IPAddress], bool] = public,
    resolver: Resolver = resolve,
    max_bytes: int = limits.IMAGE_MAX_BYTES,
    seconds: float = limits.IMAGE_URL_SECONDS,
) -> bytes:
    """The body of `url` (blocking: call it in a thread), every hop's address `allowed`."""
    deadline = time.monotonic() + seconds
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(limits.IMAGE_URL_REDIRECTS + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise InvalidRequest(f"{field}: fetching {url} took longer than {seconds:g} s", field=field)
            direct, host = _checked(url, field, allowed, resolver)
            try:
                with client.stream(
                    "GET",
                    direct,
                    headers={"Host": host, "Accept": "image/*"},
                    extensions={"sni_hostname": urlsplit(url).hostname or ""},
                    timeout=httpx.Timeout(left),
                ) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if not location:
                            raise InvalidRequest(f"{field}: {url} redirected nowhere", field=field)
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(
                            f"{field}: fetching {url} answered {response.status_code}, not an image", field=field
                        )
                    return _read(response, url, field, max_bytes, deadline, seconds)
            except httpx.HTTPError as exc:
                raise InvalidRequest(
                    f"{field}: fetching {url} failed: {exc or type(exc).__name__}", field=field
                ) from None
    raise InvalidRequest(f"{field}: {url}: more than {limits.IMAGE_URL_REDIRECTS} redirects", field=field)


def _checked(url: str, field: str, allowed: Callable[[IPAddress], bool], resolver: Resolver) -> tuple[str, str]:
    """The URL with its host replaced by the checked address it resolved to, and the Host header to send."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field}: {url} is not an http(s) URL", field=field)
    if parts.username or parts.password:
        raise InvalidRequest(f"{field}: {url}: URLs with credentials are not fetched", field=field)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = resolver(parts.hostname, port)
    except (OSError, UnicodeError) as exc:
        raise InvalidRequest(f"{field}: {url}: its host does not resolve ({exc})", field=field) from None
    addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
    refused = [a for a in addresses if not allowed(a)]
    if refused or not addresses:
        raise InvalidRequest(
            f"{field}: {url} is refused: its host resolves to {refused[0] if refused else 'nothing'}, not a public "
            "address (images are never fetched from loopback, private or link-local addresses)",
            field=field,
        )
    address = addresses[0]
    netloc = f"[{address}]" if address.version == 6 else str(address)
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, "")), host


def _read(response: httpx.Response, url: str, field: str, max_bytes: int, deadline: float, seconds: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise InvalidRequest(
            f"{field}: {url} is {declared} bytes, more than the {limits.size_text(max_bytes)} allowed for an image",
            field=field,
        )
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise InvalidRequest(
                f"{field}: {url} is more than the {limits.size_text(max_bytes)} allowed for an image", field=field
            )
        if time.monotonic() > deadline:
            raise InvalidRequest(f"{field}: fetching {url} took longer than {seconds:g} s", field=field)
    return bytes(body)
