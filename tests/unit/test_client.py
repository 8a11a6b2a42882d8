from __future__ import annotations

import json
import socket
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import httpx
import pytest

from localllm.client import Client
from localllm.domain.errors import ClientError, DaemonNotRunning, ResponseError

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: Any) -> Client:
    return Client(http=httpx.Client(transport=httpx.MockTransport(handler), base_url="http://daemon.test"), **kwargs)


def ndjson(*items: dict[str, Any]) -> httpx.Response:
    body = "".join(json.dumps(item) + "\n" for item in items)
    return httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})


class Recorder:
    """A handler that records each request and answers from a route table."""

    def __init__(self, routes: dict[tuple[str, str], httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes.get((request.method, request.url.path), httpx.Response(404, json={"error": "no route"}))

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- where the client talks ------------------------------------------------------------------------------


def test_host_defaults_to_localllm_host_read_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALLLM_HOST", raising=False)
    assert Client().base_url == "http://127.0.0.1:11434"
    monkeypatch.setenv("LOCALLLM_HOST", "0.0.0.0:8080")
    assert Client().base_url == "http://0.0.0.0:8080"


def test_explicit_host_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLLM_HOST", "0.0.0.0:8080")
    assert Client("https://example.org").base_url == "https://example.org:443"
    assert Client(":9999").base_url == "http://127.0.0.1:9999"


def test_injected_http_client_keeps_its_base_url() -> None:
    recorder = Recorder({("GET", "/api/version"): httpx.Response(200, json={"version": "1.2.3"})})
    client = make_client(recorder)
    assert client.version() == "1.2.3"
    assert str(recorder.requests[0].url) == "http://daemon.test/api/version"


# -- plain requests ---------------------------------------------------------------------------------------


def test_heartbeat_and_version() -> None:
    recorder = Recorder(
        {
            ("GET", "/"): httpx.Response(200, text="localllm is running"),
            ("GET", "/api/version"): httpx.Response(200, json={"version": "0.1.0"}),
        }
    )
    client = make_client(recorder)
    client.heartbeat()
    assert client.version() == "0.1.0"
    assert [r.url.path for r in recorder.requests] == ["/", "/api/version"]


def test_list_show_ps() -> None:
    model = {"name": "smollm2:135m", "model": "smollm2:135m", "size": 1, "digest": "ab" * 32}
    recorder = Recorder(
        {
            ("GET", "/api/tags"): httpx.Response(200, json={"models": [model]}),
            ("POST", "/api/show"): httpx.Response(200, json={"template": "{{ .Prompt }}", "details": {}}),
            ("GET", "/api/ps"): httpx.Response(200, json={"models": []}),
        }
    )
    client = make_client(recorder)
    assert client.list() == [model]
    assert client.show("smollm2:135m")["template"] == "{{ .Prompt }}"
    assert recorder.body() == {"model": "smollm2:135m"}
    assert client.ps() == []


def test_delete_and_copy_send_ollama_bodies() -> None:
    recorder = Recorder({("DELETE", "/api/delete"): httpx.Response(200), ("POST", "/api/copy"): httpx.Response(200)})
    client = make_client(recorder)
    client.delete("a:latest")
    assert recorder.requests[-1].method == "DELETE"
    assert recorder.body() == {"model": "a:latest"}
    client.copy("a", "b")
    assert recorder.body() == {"source": "a", "destination": "b"}


def test_error_status_raises_response_error_with_message_and_status() -> None:
    recorder = Recorder({("POST", "/api/show"): httpx.Response(404, json={"error": "model 'nope' not found"})})
    with pytest.raises(ResponseError) as info:
        make_client(recorder).show("nope")
    assert str(info.value) == "model 'nope' not found"
    assert info.value.error == "model 'nope' not found"
    assert info.value.status_code == 404


def test_error_status_without_json_body_uses_the_text() -> None:
    recorder = Recorder({("DELETE", "/api/delete"): httpx.Response(500, text="boom\n")})
    with pytest.raises(ResponseError, match="^boom$") as info:
        make_client(recorder).delete("x")
    assert info.value.status_code == 500


def test_error_status_with_empty_body_uses_the_reason() -> None:
    recorder = Recorder({("GET", "/api/ps"): httpx.Response(503)})
    with pytest.raises(ResponseError, match="Service Unavailable"):
        make_client(recorder).ps()


# -- streams ----------------------------------------------------------------------------------------------


def test_pull_yields_each_progress_line() -> None:
    lines: list[dict[str, Any]] = [
        {"status": "pulling manifest"},
        {"status": "pulling 270cba1bd510", "digest": "sha256:" + "27" * 32, "total": 10, "completed": 5},
        {"status": "success"},
    ]
    recorder = Recorder({("POST", "/api/pull"): ndjson(*lines)})
    assert list(make_client(recorder).pull("m")) == lines
    assert recorder.body() == {"model": "m", "stream": True}


def test_stream_skips_blank_lines() -> None:
    body = '{"status": "a"}\n\n   \n{"status": "success"}\n'
    recorder = Recorder({("POST", "/api/pull"): httpx.Response(200, content=body)})
    assert [e["status"] for e in make_client(recorder).pull("m")] == ["a", "success"]


def test_generate_streams_chunks_and_sends_only_set_fields() -> None:
    chunks = [
        {"model": "m", "response": "Hel", "done": False},
        {"model": "m", "response": "lo", "done": False},
        {"model": "m", "response": "", "done": True, "done_reason": "stop", "eval_count": 2},
    ]
    recorder = Recorder({("POST", "/api/generate"): ndjson(*chunks)})
    client = make_client(recorder)
    assert "".join(c["response"] for c in client.generate("m", "hi")) == "Hello"
    assert recorder.body() == {"model": "m", "prompt": "hi", "stream": True}
    list(
        client.generate(
            "m", "hi", system="be brief", options={"temperature": 0}, keep_alive="10m", format={"type": "object"}
        )
    )
    assert recorder.body() == {
        "model": "m",
        "prompt": "hi",
        "stream": True,
        "system": "be brief",
        "options": {"temperature": 0},
        "keep_alive": "10m",
        "format": {"type": "object"},
    }
    list(client.generate("m", "", keep_alive=0))
    assert recorder.body()["keep_alive"] == 0


def test_chat_sends_the_messages() -> None:
    chunks = [
        {"message": {"role": "assistant", "content": "Hi!"}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"},
    ]
    recorder = Recorder({("POST", "/api/chat"): ndjson(*chunks)})
    messages = [{"role": "user", "content": "hello"}]
    assert list(make_client(recorder).chat("m", messages, format="json")) == chunks
    assert recorder.body() == {"model": "m", "messages": messages, "stream": True, "format": "json"}


def test_stream_is_lazy() -> None:
    recorder = Recorder({("POST", "/api/chat"): ndjson({"done": True})})
    stream = make_client(recorder).chat("m", [])
    assert recorder.requests == []
    assert list(stream) == [{"done": True}]


def test_error_line_after_streaming_began_raises() -> None:
    recorder = Recorder({("POST", "/api/generate"): ndjson({"response": "a", "done": False}, {"error": "runner died"})})
    stream = make_client(recorder).generate("m", "hi")
    assert next(stream)["response"] == "a"
    with pytest.raises(ResponseError, match="runner died"):
        next(stream)


def test_error_status_on_a_stream_raises_before_any_chunk() -> None:
    recorder = Recorder({("POST", "/api/chat"): httpx.Response(404, json={"error": "model 'x' not found"})})
    with pytest.raises(ResponseError, match="model 'x' not found") as info:
        list(make_client(recorder).chat("x", []))
    assert info.value.status_code == 404


def test_a_line_that_is_not_json_is_a_client_error() -> None:
    recorder = Recorder({("POST", "/api/pull"): httpx.Response(200, content="<html>\n")})
    with pytest.raises(ClientError, match="not JSON"):
        list(make_client(recorder).pull("m"))


def test_closing_a_stream_early_closes_the_response() -> None:
    closed: list[bool] = []

    class Body(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for i in range(100):
                yield (json.dumps({"response": str(i), "done": False}) + "\n").encode()

        def close(self) -> None:
            closed.append(True)

    client = make_client(lambda request: httpx.Response(200, stream=Body()))
    stream = client.generate("m", "hi")
    assert next(stream)["response"] == "0"
    cast(Generator[Any, None, None], stream).close()
    assert closed == [True]


def test_streams_have_no_read_timeout_by_default_but_plain_requests_do() -> None:
    seen: dict[str, dict[str, float | None]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.extensions["timeout"]
        if request.url.path == "/api/generate":
            return ndjson({"done": True})
        return httpx.Response(200, json={"version": "x"})

    client = make_client(handler)
    client.version()
    list(client.generate("m", "hi"))
    assert seen["/api/generate"]["read"] is None
    assert seen["/api/version"]["read"] == 60.0
    assert seen["/api/generate"]["connect"] == 10.0

    client = make_client(handler, timeout=5)
    client.version()
    list(client.generate("m", "hi"))
    assert seen["/api/generate"]["read"] == 5
    assert seen["/api/version"]["read"] == 5


# -- connection failures ----------------------------------------------------------------------------------


def test_connection_refused_raises_daemon_not_running() -> None:
    client = Client(f"127.0.0.1:{free_port()}")
    with pytest.raises(DaemonNotRunning) as info:
        client.version()
    message = str(info.value)
    assert f"could not connect to the localllm daemon at {client.base_url}: nothing is listening there" in message
    assert "localllm serve" in message
    with pytest.raises(DaemonNotRunning):
        list(client.pull("m"))
    client.close()


def test_connect_error_from_the_transport_raises_daemon_not_running() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(DaemonNotRunning, match="nothing is listening"):
        list(make_client(handler).chat("m", []))


def test_a_dropped_connection_is_a_client_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    with pytest.raises(ClientError, match="lost the connection") as info:
        make_client(handler).list()
    assert not isinstance(info.value, DaemonNotRunning)


def test_client_as_context_manager_closes_its_own_http_client() -> None:
    with Client("127.0.0.1:1") as client:
        http = client._http
    assert http.is_closed
    injected = httpx.Client()
    with Client(http=injected):
        pass
    assert not injected.is_closed
    injected.close()


# -- API keys ----------------------------------------------------------------------------------------------


def test_api_key_is_sent_and_a_401_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = httpx.Response(401, json={"error": "invalid API key"})
    recorder = Recorder({("GET", "/api/tags"): refused, ("POST", "/api/generate"): refused})
    monkeypatch.setenv("LOCALLLM_API_KEY", "llk-abc")
    client = make_client(recorder)
    with pytest.raises(ResponseError) as err:
        client.list()
    assert recorder.requests[-1].headers["authorization"] == "Bearer llk-abc"
    assert err.value.status_code == 401
    assert "refused the API key (LOCALLLM_API_KEY): invalid API key" in str(err.value)
    with pytest.raises(ResponseError, match="refused the API key"):
        list(make_client(recorder, api_key="llk-other").generate("m", "hi"))
    assert recorder.requests[-1].headers["authorization"] == "Bearer llk-other"
    monkeypatch.delenv("LOCALLLM_API_KEY")
    with pytest.raises(ResponseError, match="requires an API key: set LOCALLLM_API_KEY"):
        make_client(recorder).list()
    assert "authorization" not in recorder.requests[-1].headers
