"""Images and audio in requests (issue 25): each dialect's parts become `Media` and markers by one rule (the same
prompt whichever API sent them), the service's one capability check, the bounds read from headers before
anything decodes (a PNG bomb, truncated base64, too many items, audio seconds), and remote URLs (off by
default; when on, never to a private address, redirects included). Through the real app and service on a
fake runner that records its jobs; the model's `vision` capability is the one thing faked here (the
projector that gives it is tested with the runner, tests/e2e)."""

from __future__ import annotations

import dataclasses
import http.server
import ipaddress
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain import limits, mediacheck, parts
from localllm.domain.errors import InvalidRequest
from localllm.domain.media import MARKER, Media
from localllm.domain.messages import ChatMessage
from localllm.domain.names import parse_name
from localllm.modelstore.models import Model
from localllm.modelstore.store import Manifest, Store
from localllm.runner.requests import Job
from localllm.scheduling.scheduler import Scheduler
from localllm.server.app import create_app
from localllm.service import imagefetch
from localllm.service.core import Service
from localllm.service.responses_store import ResponseStore

from ..fakes import FakeFactory, write_tiny_gguf
from ..media import b64, bmp_header, data_url, gif_header, jpeg_header, png, wav

TEMPLATE = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
PNG = png()
IMAGE_THEN_TEXT = "describe it"


def test_the_limits_table_states_the_media_bounds() -> None:
    table = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| images and audio"))
    stated = [
        f"≤ {limits.MEDIA_MAX_ITEMS} items per request",
        f"an image ≤ {limits.size_text(limits.IMAGE_MAX_BYTES)}",
        f"an audio clip ≤ {limits.size_text(limits.AUDIO_MAX_BYTES)}",
        f"all of a request's ≤ {limits.size_text(limits.MEDIA_REQUEST_MAX_BYTES)}",
        f"≤ {limits.IMAGE_MAX_PIXELS:,} pixels and ≤ {limits.IMAGE_MAX_SIDE} on a side",
        f"≤ {limits.AUDIO_MAX_SECONDS:g} s",
    ]
    assert [s for s in stated if s not in row] == []
    urls = next(line for line in table.splitlines() if line.startswith("| remote image URLs"))
    assert f"≤ {limits.IMAGE_URL_REDIRECTS} redirects" in urls and f"≤ {limits.IMAGE_URL_SECONDS:g} s" in urls


# -- the rule -----------------------------------------------------------------------------------------------


def test_parts_join_with_newlines_but_none_around_a_marker() -> None:
    image = Media("image", PNG, "p")
    assert parts.join([image, "X"]) == (f"{MARKER}X", (image,))
    assert parts.join(["a", image, "b", "c"]) == (f"a{MARKER}b\nc", (image,))
    assert parts.join(["a", "b"]) == ("a\nb", ())
    with pytest.raises(InvalidRequest) as info:
        parts.text_part(f"look: {MARKER}", "messages[0].content")
    assert info.value.field == "messages[0].content" and MARKER in str(info.value)


# -- bounds, from the headers -------------------------------------------------------------------------------


def refused(item: Media) -> str:
    with pytest.raises(InvalidRequest) as info:
        mediacheck.check_all([item])
    assert info.value.field == item.source
    return str(info.value)


def test_a_real_png_is_read_from_its_header() -> None:
    assert mediacheck.check(Media("image", png(3, 5), "x")) == mediacheck.MediaInfo("png", 3, 5)


def test_a_png_bomb_is_refused_from_its_header() -> None:
    bomb = png(1, 1, declared=(50_000, 50_000))
    assert len(bomb) < 100
    assert "50000 × 50000 pixels" in refused(Media("image", bomb, "images[0]"))
    wide = png(1, 1, declared=(limits.IMAGE_MAX_SIDE + 1, 1))
    assert "pixels" in refused(Media("image", wide, "images[0]"))


@pytest.mark.parametrize("header", [png, jpeg_header, gif_header, bmp_header], ids=["png", "jpeg", "gif", "bmp"])
def test_each_format_declares_its_size_in_its_header(header: Any) -> None:
    small = header(7, 5) if header is not png else png(7, 5)
    info = mediacheck.check(Media("image", small, "x"))
    assert (info.width, info.height) == (7, 5)
    bomb = header(50_000, 50_000) if header is not png else png(1, 1, declared=(50_000, 50_000))
    assert "50000 × 50000 pixels" in refused(Media("image", bomb, "x"))


def test_truncated_or_broken_payloads_are_refused_naming_the_part() -> None:
    text = b64(PNG)
    with pytest.raises(InvalidRequest) as info:
        mediacheck.decode_base64(text[:-3], "messages[0].images[0]", kind="image")
    assert info.value.field == "messages[0].images[0]" and "base64" in str(info.value)
    cut = PNG[: len(PNG) - 10]  # valid base64 of a file cut short
    assert "truncated" in refused(Media("image", cut, "m[0]"))
    assert "PNG, JPEG, GIF, BMP" in refused(Media("image", b"hello, not an image", "m[0]"))
    assert "no audio clip" in refused(Media("audio", PNG, "m[0]"))
    webp = b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f\x00\x00\x00\x00" + b"\0" * 8
    assert "WebP" in refused(Media("image", webp, "m[0]"))


def test_too_many_items_or_bytes_are_refused() -> None:
    items = [Media("image", PNG, f"images[{i}]") for i in range(limits.MEDIA_MAX_ITEMS + 1)]
    with pytest.raises(InvalidRequest) as info:
        mediacheck.check_all(items)
    assert info.value.field == f"images[{limits.MEDIA_MAX_ITEMS}]"
    big = "A" * (limits.IMAGE_MAX_BYTES // 3 * 4 + 8192)
    with pytest.raises(InvalidRequest) as info:
        mediacheck.decode_base64(big, "images[0]", kind="image")
    assert "more than the 20 MiB" in str(info.value)


def test_audio_seconds_come_from_the_header() -> None:
    assert mediacheck.check(Media("audio", wav(1.5), "a")).seconds == 1.5
    cut = wav(1.0, rate=8)[:-4]  # a data chunk saying more than the file holds
    assert "truncated" in refused(Media("audio", cut, "a"))
    assert "601.0 s" in refused(Media("audio", wav(601, rate=8), "a"))
    flac = b"fLaC\x00\x00\x00\x22" + b"\0" * 10 + ((16000 << 44) | (16000 * 700)).to_bytes(8, "big") + b"\0" * 16
    assert "700.0 s" in refused(Media("audio", flac, "a"))


# -- through the app ----------------------------------------------------------------------------------------


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


def client_for(
    tmp_path: Path, factory: FakeFactory, fetch: Any = imagefetch.fetch, **settings: Any
) -> Iterator[TestClient]:
    config = dataclasses.replace(Settings(host=parse_host(""), models_dir=tmp_path / "models"), **settings)
    store = Store(config.models_dir)
    layer = store.add_blob_file(write_tiny_gguf(tmp_path / "t.gguf", template=TEMPLATE, context_length=4096))
    store.write_manifest(parse_name("tiny"), Manifest((layer,)))
    small = store.add_blob_file(write_tiny_gguf(tmp_path / "s.gguf", template=TEMPLATE, context_length=256))
    store.write_manifest(parse_name("small"), Manifest((small,)))
    service = Service(config, store, Scheduler(factory=factory), fetch=fetch)
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def vision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model reads images and audio (as one with a projector would: modelstore says so)."""
    monkeypatch.setattr(Model, "capabilities", property(lambda self: ["completion", "vision", "audio"]))


def last_job(factory: FakeFactory) -> Job:
    return [job for runner in factory.runners for job in runner.jobs][-1]


def image_then_text(image: bytes) -> dict[str, dict[str, Any]]:
    """One image then the text, in each dialect's own form: route -> body."""
    url = data_url(image)
    return {
        "/api/chat": {
            "model": "tiny",
            "stream": False,
            "messages": [{"role": "user", "content": IMAGE_THEN_TEXT, "images": [b64(image)]}],
        },
        "/api/generate": {"model": "tiny", "stream": False, "prompt": IMAGE_THEN_TEXT, "images": [b64(image)]},
        "/v1/chat/completions": {
            "model": "tiny",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                        {"type": "text", "text": IMAGE_THEN_TEXT},
                    ],
                }
            ],
        },
        "/v1/messages": {
            "model": "tiny",
            "max_tokens": 8,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(image)}},
                        {"type": "text", "text": IMAGE_THEN_TEXT},
                    ],
                }
            ],
        },
        "/v1/responses": {
            "model": "tiny",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": url, "detail": "auto"},
                        {"type": "input_text", "text": IMAGE_THEN_TEXT},
                    ],
                }
            ],
        },
    }


def test_every_dialect_makes_the_same_prompt_and_media(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    for client in client_for(tmp_path, factory):
        seen = {}
        for route, body in image_then_text(PNG).items():
            answer = client.post(route, json=body)
            assert answer.status_code == 200, (route, answer.text)
            job = last_job(factory)
            seen[route] = (job.prompt, [(m.kind, m.data) for m in job.media])
        expected = (f"[user]{MARKER}{IMAGE_THEN_TEXT}", [("image", PNG)])
        assert seen == dict.fromkeys(seen, expected)
        raw = {"model": "tiny", "stream": False, "raw": True, "prompt": "x", "images": [b64(PNG)]}
        assert client.post("/api/generate", json=raw).status_code == 200
        assert last_job(factory).prompt == f"{MARKER}x" and len(last_job(factory).media) == 1


def test_audio_and_several_images_keep_their_order(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    red, blue, clip = png(rgb=(255, 0, 0)), png(rgb=(0, 0, 255)), wav(0.5)
    content = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": data_url(red)},
        {"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}},
        {"type": "image_url", "image_url": {"url": data_url(blue)}},
        {"type": "text", "text": "b"},
    ]
    for client in client_for(tmp_path, factory):
        body = {"model": "tiny", "messages": [{"role": "user", "content": content}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        job = last_job(factory)
        assert job.prompt == f"[user]a{MARKER}{MARKER}{MARKER}b"
        assert [m.data for m in job.media] == [red, clip, blue]
        assert [m.source for m in job.media] == [f"messages[0].content[{i}]" for i in (1, 2, 3)]


def test_ollama_images_holding_audio_are_audio(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    """Ollama's API has one media field: a WAV in `images` (as `localllm run` sends an audio file) is audio."""
    clip = wav(0.5)
    for client in client_for(tmp_path, factory):
        body = {
            "model": "tiny",
            "stream": False,
            "messages": [{"role": "user", "content": "x", "images": [b64(PNG), b64(clip)]}],
        }
        assert client.post("/api/chat", json=body).status_code == 200
        assert [(m.kind, m.data) for m in last_job(factory).media] == [("image", PNG), ("audio", clip)]


def test_turns_dropped_to_fit_take_their_media_with_them(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    red, blue = png(rgb=(255, 0, 0)), png(rgb=(0, 0, 255))
    messages = [
        {"role": "user", "content": "word " * 300, "images": [b64(red)]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "last", "images": [b64(blue)]},
    ]
    for client in client_for(tmp_path, factory):
        answer = client.post("/api/chat", json={"model": "small", "messages": messages, "stream": False})
        assert answer.status_code == 200, answer.text
        job = last_job(factory)
        assert job.prompt.count(MARKER) == 1 and [m.data for m in job.media] == [blue]


def test_a_stored_response_keeps_its_media(tmp_path: Path) -> None:
    """`previous_response_id` continues with the images of the conversation it stored, from disk too."""
    image, remote = Media("image", PNG, "input[0].content[0]"), Media("image", b"", "x", url="https://e.org/a.png")
    conversation = (ChatMessage("user", f"{MARKER}{MARKER}hi", media=(image, remote)), ChatMessage("assistant", "ok"))
    ResponseStore(directory=tmp_path).put({"id": "resp_1"}, conversation)
    stored = ResponseStore(directory=tmp_path).get("resp_1")  # read back from its file
    assert stored is not None and stored.conversation == conversation


def test_a_continued_response_sends_the_earlier_image(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    for client in client_for(tmp_path, factory):
        first = client.post("/v1/responses", json=image_then_text(PNG)["/v1/responses"])
        assert first.status_code == 200, first.text
        body = {"model": "tiny", "input": "and now?", "previous_response_id": first.json()["id"]}
        assert client.post("/v1/responses", json=body).status_code == 200
        job = last_job(factory)
        assert job.prompt.count(MARKER) == 1 and [m.data for m in job.media] == [PNG]


def error_field(route: str, answer: Any) -> tuple[int, str]:
    """The field and message an error names, in the route's dialect."""
    body = answer.json()
    if route.startswith("/api/"):
        return answer.status_code, body["error"]
    if route == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        return answer.status_code, body["error"]["message"]
    return answer.status_code, f"{body['error']['param']}: {body['error']['message']}"


FIELDS = {
    "/api/chat": "messages[0].images[0]",
    "/api/generate": "images[0]",
    "/v1/chat/completions": "messages[0].content[0]",
    "/v1/messages": "messages[0].content[0]",
    "/v1/responses": "input[0].content[0]",
}


def test_a_model_without_vision_refuses_images_naming_the_part(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory):
        for route, body in image_then_text(PNG).items():
            status, message = error_field(route, client.post(route, json=body))
            assert status == 400 and FIELDS[route] in message, (route, message)
            assert '"vision"' in message and "completion" in message, message
        assert not factory.runners, "refused before a runner was started"


def test_bounds_and_markers_are_refused_in_every_dialect(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    bomb = png(1, 1, declared=(50_000, 50_000))
    for client in client_for(tmp_path, factory):
        for route, body in image_then_text(bomb).items():
            status, message = error_field(route, client.post(route, json=body))
            assert status == 400 and FIELDS[route] in message and "50000 × 50000" in message, (route, message)
        many = {"model": "tiny", "stream": False, "prompt": "x", "images": [b64(PNG)] * (limits.MEDIA_MAX_ITEMS + 1)}
        assert client.post("/api/generate", json=many).status_code == 400
        cut = {"model": "tiny", "stream": False, "prompt": "x", "images": [b64(PNG)[:-2]]}
        status, message = error_field("/api/generate", client.post("/api/generate", json=cut))
        assert status == 400 and "images[0]" in message and "base64" in message
        sneaky = {"model": "tiny", "messages": [{"role": "user", "content": f"a {MARKER} b"}]}
        status, message = error_field("/v1/chat/completions", client.post("/v1/chat/completions", json=sneaky))
        assert status == 400 and "messages[0].content" in message and MARKER in message


def test_image_urls_are_off_by_default(tmp_path: Path, factory: FakeFactory, vision: None) -> None:
    part = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}
    body = {"model": "tiny", "messages": [{"role": "user", "content": [part]}]}
    for client in client_for(tmp_path, factory):
        status, message = error_field("/v1/chat/completions", client.post("/v1/chat/completions", json=body))
        assert status == 400 and "messages[0].content[0]" in message and "LOCALLLM_ALLOW_IMAGE_URLS=1" in message
    for client in client_for(tmp_path, factory, allow_image_urls=True):
        status, message = error_field("/v1/chat/completions", client.post("/v1/chat/completions", json=body))
        assert status == 400 and "169.254.169.254" in message and "not a public address" in message


def test_an_allowed_url_is_fetched_and_checked_like_any_image(
    tmp_path: Path, factory: FakeFactory, vision: None
) -> None:
    fetched: list[tuple[str, str]] = []

    def fetch(url: str, field: str) -> bytes:
        fetched.append((url, field))
        return PNG if url.endswith("a.png") else b"<html>not an image</html>"

    source = {"type": "url", "url": "https://images.example/a.png"}
    image: dict[str, Any] = {"type": "image", "source": source}
    body = {"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": [image]}]}
    for client in client_for(tmp_path, factory, fetch=fetch, allow_image_urls=True):
        assert client.post("/v1/messages", json=body).status_code == 200
        assert fetched == [("https://images.example/a.png", "messages[0].content[0]")]
        assert [m.data for m in last_job(factory).media] == [PNG]
        source["url"] = "https://images.example/page.html"
        status, message = error_field("/v1/messages", client.post("/v1/messages", json=body))
        assert status == 400 and message.startswith("messages[0].content[0]: not an image")


# -- remote images (LOCALLLM_ALLOW_IMAGE_URLS=1) ------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, str], bytes]]]]:
    """An HTTP server on 127.0.0.2, standing for a public host (`allowed` below lets that one address in)."""
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def only_the_test_host(address: imagefetch.IPAddress) -> bool:
    return address == ipaddress.ip_address("127.0.0.2") or imagefetch.public(address)


def test_a_fetch_follows_redirects_between_allowed_hosts(server: tuple[str, dict[str, Any]]) -> None:
    base, routes = server
    routes["/a.png"] = (302, {"Location": "/b.png"}, b"")
    routes["/b.png"] = (200, {"Content-Type": "image/png"}, PNG)
    assert imagefetch.fetch(f"{base}/a.png", "f", allowed=only_the_test_host) == PNG


def test_a_redirect_to_loopback_is_refused_naming_the_url(server: tuple[str, dict[str, Any]]) -> None:
    base, routes = server
    target = "http://127.0.0.1:9/admin.png"
    routes["/a.png"] = (302, {"Location": target}, b"")
    with pytest.raises(InvalidRequest) as info:
        imagefetch.fetch(f"{base}/a.png", "messages[0].content[0]", allowed=only_the_test_host)
    assert info.value.field == "messages[0].content[0]" and target in str(info.value)
    assert "not a public address" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        imagefetch.fetch(f"{base}/a.png", "f")  # by default even the first hop (loopback) is refused
    assert base in str(info.value)


def test_a_fetch_is_bounded_in_bytes(server: tuple[str, dict[str, Any]]) -> None:
    base, routes = server
    routes["/big.png"] = (200, {}, b"x" * 2048)
    with pytest.raises(InvalidRequest) as info:
        imagefetch.fetch(f"{base}/big.png", "f", allowed=only_the_test_host, max_bytes=1024)
    assert "more than the 1 KiB" in str(info.value)
    assert not imagefetch.public(ipaddress.ip_address("10.0.0.1"))
    assert not imagefetch.public(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not imagefetch.public(ipaddress.ip_address("fe80::1"))
    assert imagefetch.public(ipaddress.ip_address("93.184.216.34"))
