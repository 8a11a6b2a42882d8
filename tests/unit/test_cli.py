from __future__ import annotations

import hashlib
import json
import socket
import sys
import types
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from localllm.client import Client, service_hint
from localllm.config import Settings
from localllm.modelstore import library
from localllm.modelstore.modelfile import parse, to_create_request
from localllm_cli import run as run_module
from localllm_cli.main import cli
from localllm_cli.render import (
    PullProgress,
    go_duration,
    human_bytes,
    human_number,
    human_time,
    parse_timestamp,
    processor,
    progress_bar,
    table,
    timings,
    until,
)

DIGEST = "sha256:270cba1bd5109f42d03350f60406024560464ec173c0e387a75c8b5d6d5e9e8a"
LAYER = "sha256:" + "dd" * 32


def iso(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).isoformat()


def ndjson(*items: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content="".join(json.dumps(i) + "\n" for i in items))


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


class FakeDaemon:
    """Answers like the daemon's /api/* routes, from in-memory state; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.models: dict[str, dict[str, Any]] = {
            "smollm2:135m": {
                "name": "smollm2:135m",
                "model": "smollm2:135m",
                "modified_at": iso(-timedelta(minutes=2, seconds=30)),
                "size": 1_234_567,
                "digest": DIGEST,
                "details": {"family": "llama", "parameter_size": "135M", "quantization_level": "Q8_0"},
            },
            "qwen:latest": {
                "name": "qwen:latest",
                "model": "qwen:latest",
                "modified_at": iso(-timedelta(days=3)),
                "size": 4_700_000_000,
                "digest": "sha256:" + "ab" * 32,
                "details": {},
            },
        }
        self.pullable = {"new:latest"}
        self.answers = ["Hello there!", "Second answer."]
        self.chat_turns = 0
        self.blobs: dict[str, bytes] = {}
        self.created: dict[str, dict[str, Any]] = {}  # name -> the /api/create body that made it
        self.stream: ClosableStream | None = None  # the last chat stream sent

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/blobs/"):
            return self.route_blobs(request)
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        route = getattr(self, "route_" + request.url.path.strip("/").replace("/", "_"), None)
        if route is None:
            return error(404, "404 page not found")
        response: httpx.Response = route(body)
        return response

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]

    def _key(self, name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    def _model(self, name: str) -> dict[str, Any] | None:
        return self.models.get(self._key(name))

    def route_api_version(self, body: Any) -> httpx.Response:
        return httpx.Response(200, json={"version": "0.1.0"})

    def route_api_tags(self, body: Any) -> httpx.Response:
        return httpx.Response(200, json={"models": list(self.models.values())})

    def route_api_show(self, body: Any) -> httpx.Response:
        if self._model(body["model"]) is None:
            return error(404, f"model '{body['model']}' not found")
        key = self._key(body["model"])
        messages = self.created.get(key, {}).get("messages")
        extra = {"messages": messages} if messages else {}
        return httpx.Response(
            200,
            json=extra
            | {
                "modelfile": "FROM /blobs/sha256-abc\nPARAMETER temperature 0.2\n",
                "parameters": 'temperature                    0.2\nstop                           "<|im_end|>"',
                "template": "{{ .Prompt }}",
                "system": "You are helpful.",
                "license": "Apache License\nVersion 2.0\nmore\nmore",
                "details": {"family": "llama", "parameter_size": "135M", "quantization_level": "Q8_0"},
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": 134_515_008,
                    "llama.context_length": 8192,
                    "llama.embedding_length": 576,
                },
                "capabilities": ["embedding"] if key.startswith("minilm") else ["completion"],
                "modified_at": iso(timedelta()),
            },
        )

    def route_blobs(self, request: httpx.Request) -> httpx.Response:
        digest = request.url.path.removeprefix("/api/blobs/")
        self.requests.append((request.method, "/api/blobs", digest))
        if request.method == "HEAD":
            return httpx.Response(200 if digest in self.blobs else 404)
        data = request.read()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            return error(400, "digest mismatch")
        self.blobs[digest] = data
        return httpx.Response(201)

    def route_api_create(self, body: Any) -> httpx.Response:
        for key in ("files", "adapters"):
            for name, digest in (body.get(key) or {}).items():
                if digest not in self.blobs:
                    return error(400, f"{key}.{name}: blob {digest} is not on the server")
        if not body.get("files"):
            if not body.get("from"):
                return error(400, "from or files is required")
            if self._model(body["from"]) is None and not body["from"].startswith("hf.co/"):
                return error(404, f"model '{body['from']}' not found")
        key = self._key(body["model"])
        self.created[key] = body
        self.models[key] = {"name": key, "model": key, "size": 3000, "digest": LAYER, "details": {}}
        return ndjson(
            {"status": f"using existing layer {LAYER}"},
            {"status": "creating new layer sha256:" + "ee" * 32},
            {"status": "writing manifest"},
            {"status": "success"},
        )

    def route_api_embed(self, body: Any) -> httpx.Response:
        if self._model(body["model"]) is None:
            return error(404, f"model '{body['model']}' not found")
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        vectors = [[round(len(text) / 10, 1), 0.5] for text in inputs]
        return httpx.Response(200, json={"model": body["model"], "embeddings": vectors})

    def route_api_pull(self, body: Any) -> httpx.Response:
        name = body["model"]
        if name not in self.pullable:
            return ndjson({"status": "pulling manifest"}, {"error": f"pull model manifest: {name} not found"})
        self.models[name] = {"name": name, "model": name, "size": 3000, "digest": LAYER, "details": {}}
        progress = [
            {"status": f"pulling {LAYER[7:19]}", "digest": LAYER, "total": 3000, "completed": c}
            for c in (0, 1000, 2000, 3000)
        ]
        return ndjson(
            {"status": "pulling manifest"},
            *progress,
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        )

    def route_api_delete(self, body: Any) -> httpx.Response:
        name = body["model"]
        if self.models.pop(name if ":" in name else f"{name}:latest", None) is None:
            return error(404, f"model '{name}' not found")
        return httpx.Response(200)

    def route_api_copy(self, body: Any) -> httpx.Response:
        source = self._model(body["source"])
        if source is None:
            return error(404, f"model '{body['source']}' not found")
        self.models[body["destination"]] = dict(source, name=body["destination"])
        return httpx.Response(200)

    def route_api_ps(self, body: Any) -> httpx.Response:
        loaded = [
            {"name": "smollm2:135m", "digest": DIGEST, "size": 200_000_000, "size_vram": 0, "context_length": 8192,
             "expires_at": iso(timedelta(minutes=4, seconds=30))},
            {"name": "qwen:latest", "digest": "ab" * 32, "size": 2_000_000_000, "size_vram": 2_000_000_000,
             "context_length": 4096, "expires_at": "2318-01-01T00:00:00Z", "kv_cache_type": "q8_0"},
            {"name": "split:latest", "digest": "cd" * 32, "size": 1000, "size_vram": 520, "context_length": 2048,
             "expires_at": iso(timedelta(hours=-1))},
        ]  # fmt: skip
        return httpx.Response(200, json={"models": loaded})

    def _done(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": "m",
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_500_000_000,
            "load_duration": 2_000_000,
            "prompt_eval_count": 10,
            "prompt_eval_duration": 100_000_000,
            "eval_count": 20,
            "eval_duration": 400_000_000,
            **extra,
        }

    def route_api_generate(self, body: Any) -> httpx.Response:
        if self._model(body["model"]) is None:
            return error(404, f"model '{body['model']}' not found")
        if not body["prompt"]:
            return ndjson({"model": body["model"], "response": "", "done": True, "done_reason": "load"})
        pieces = ["The ", "sky ", "is ", "blue."]
        return ndjson(*[{"model": body["model"], "response": p, "done": False} for p in pieces], self._done())

    def route_api_chat(self, body: Any) -> httpx.Response:
        if self._model(body["model"]) is None:
            return error(404, f"model '{body['model']}' not found")
        if not body["messages"]:
            return ndjson({"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"})
        answer = self.answers[self.chat_turns % len(self.answers)]
        self.chat_turns += 1
        words = [w + " " for w in answer.split(" ")]
        words[-1] = words[-1].rstrip()
        chunks = [{"message": {"role": "assistant", "content": w}, "done": False} for w in words]
        lines = [*chunks, self._done(message={"role": "assistant", "content": ""})]
        self.stream = ClosableStream([json.dumps(line).encode() + b"\n" for line in lines])
        return httpx.Response(200, stream=self.stream)


class ClosableStream(httpx.SyncByteStream):
    """A response body that records whether the client closed it (as Ctrl+C must, to stop the daemon)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.lines

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


def invoke(daemon: FakeDaemon, args: list[str], **kwargs: Any) -> Result:
    http = httpx.Client(transport=httpx.MockTransport(daemon), base_url="http://localllm.test")
    return CliRunner().invoke(cli, args, obj=Client(http=http), **kwargs)


@pytest.fixture
def tty_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `run` believe stdin is a terminal, so it starts the REPL (CliRunner's stdin is a pipe)."""
    monkeypatch.setattr(run_module, "_stdin_is_terminal", lambda: True)


# -- list / ps / show ------------------------------------------------------------------------------------


def test_list_prints_ollamas_table(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert lines[1].split("    ")[0] == "smollm2:135m"
    assert "270cba1bd510" in lines[1] and "1.2 MB" in lines[1] and lines[1].endswith("2 minutes ago")
    assert lines[2].startswith("qwen:latest") and "abababababab" in lines[2]
    assert "4.7 GB" in lines[2] and lines[2].endswith("3 days ago")
    # columns line up
    assert lines[0].index("ID") == lines[1].index("270cba1bd510") == lines[2].index("abababababab")


def test_ls_is_an_alias_of_list(daemon: FakeDaemon) -> None:
    assert invoke(daemon, ["ls"]).stdout == invoke(daemon, ["list"]).stdout


def test_ps_prints_processor_context_and_until(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["ps"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert "100% CPU" in lines[1] and "8192" in lines[1] and lines[1].endswith("4 minutes from now")
    assert "200 MB" in lines[1] and "270cba1bd510" in lines[1]
    assert "100% GPU" in lines[2] and "4096 (q8_0)" in lines[2] and lines[2].endswith("Forever")
    assert "(f16)" not in lines[1], "the default KV cache type is not shown"
    assert "48%/52% CPU/GPU" in lines[3] and lines[3].endswith("Stopping...")


def test_ps_shows_each_models_prompt_cache_when_the_daemon_reports_it(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = daemon.route_api_ps(None).json()["models"]
    plain[0]["prompt_cache"] = {
        "ram_bytes": 12_000_000,
        "disk_bytes": 0,
        "disk_limit": 0,
        "requests": 8,
        "hit_rate": 0.75,
    }
    plain[1]["prompt_cache"] = {"ram_bytes": 0, "disk_bytes": 2_500_000_000, "disk_limit": 1 << 34, "requests": 0}
    monkeypatch.setattr(daemon, "route_api_ps", lambda body: httpx.Response(200, json={"models": plain}))
    lines = invoke(daemon, ["ps"]).stdout.splitlines()
    assert lines[0].split()[-3:] == ["UNTIL", "PROMPT", "CACHE"]
    assert lines[1].endswith("12 MB in RAM, 75% hits")
    assert lines[2].endswith("0 B in RAM + 2.5 GB on disk, no prompts yet")
    assert lines[3].rstrip().endswith("Stopping..."), "a model without a report: the column is empty"


def test_show_prints_a_summary(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["show", "smollm2:135m"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "  Model\n" in out
    for label, value in [
        ("architecture", "llama"),
        ("parameters", "135M"),
        ("context length", "8192"),
        ("embedding length", "576"),
        ("quantization", "Q8_0"),
    ]:
        assert any(line.split() == [*label.split(), value] for line in out.splitlines()), (label, out)
    assert "  Capabilities\n    completion" in out
    assert 'stop           "<|im_end|>"' in out
    assert "  System\n    You are helpful." in out
    assert "  License\n    Apache License\n    Version 2.0\n    ..." in out


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--modelfile", "FROM /blobs/sha256-abc\nPARAMETER temperature 0.2\n"),
        ("--template", "{{ .Prompt }}\n"),
        ("--system", "You are helpful.\n"),
        ("--license", "Apache License\nVersion 2.0\nmore\nmore\n"),
        ("--parameters", 'temperature                    0.2\nstop                           "<|im_end|>"\n'),
    ],
)
def test_show_field_flags_print_just_that_field(daemon: FakeDaemon, flag: str, expected: str) -> None:
    result = invoke(daemon, ["show", "smollm2:135m", flag])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_show_refuses_two_field_flags(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["show", "smollm2:135m", "--system", "--template"])
    assert result.exit_code == 2
    assert "only one of" in result.stderr


def test_unknown_model_is_a_clean_error(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["show", "x"])
    assert result.exit_code == 1
    assert result.stderr == "Error: model 'x' not found\n"
    assert isinstance(result.exception, SystemExit)


# -- pull / rm / cp / stop --------------------------------------------------------------------------------


def test_pull_prints_each_status_line_once_when_not_a_tty(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["pull", "new:latest"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[1].startswith("pulling dddddddddddd: 100% ▕")
    assert "▏ 3.0 KB/3.0 KB" in lines[1] or "▏ 3 KB/3 KB" in lines[1]
    assert lines[2:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert "\x1b" not in result.stderr and "\r" not in result.stderr


def test_pull_error_line_is_a_clean_error(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["pull", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "pulling manifest\nError: pull model manifest: nope not found\n"


def test_rm_deletes_several_models(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["rm", "smollm2:135m", "qwen"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted 'smollm2:135m'\ndeleted 'qwen'\n"
    assert daemon.bodies("/api/delete") == [{"model": "smollm2:135m"}, {"model": "qwen"}]
    assert daemon.models == {}


def test_rm_stops_at_a_missing_model(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["rm", "missing", "qwen"])
    assert result.exit_code == 1
    assert result.stderr == "Error: model 'missing' not found\n"
    assert "qwen:latest" in daemon.models


def test_cp(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["cp", "qwen", "mine:v1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "copied 'qwen' to 'mine:v1'\n"
    assert daemon.bodies("/api/copy") == [{"source": "qwen", "destination": "mine:v1"}]


def test_stop_sends_an_empty_generate_with_keep_alive_zero(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["stop", "qwen"])
    assert result.exit_code == 0, result.output
    assert daemon.bodies("/api/generate") == [{"model": "qwen", "prompt": "", "stream": True, "keep_alive": 0}]
    result = invoke(daemon, ["stop", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "Error: couldn't find model 'nope' to stop\n"


# -- run ---------------------------------------------------------------------------------------------------


def test_run_with_a_prompt_streams_the_answer(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "qwen", "why", "is", "the", "sky", "blue?"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "The sky is blue.\n"
    assert result.stderr == ""
    (body,) = daemon.bodies("/api/generate")
    assert body == {"model": "qwen", "prompt": "why is the sky blue?", "stream": True}


def test_run_prepends_piped_stdin_to_the_prompt(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "qwen", "summarize"], input="a long text")
    assert result.exit_code == 0, result.output
    assert result.stdout == "The sky is blue.\n"
    assert daemon.bodies("/api/generate")[0]["prompt"] == "a long text summarize"


def test_run_with_only_piped_stdin_runs_once(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "qwen"], input="hello\n/bye\n")
    assert result.exit_code == 0, result.output
    assert daemon.bodies("/api/generate")[0]["prompt"] == "hello\n/bye\n"
    assert daemon.bodies("/api/chat") == []


def test_run_passes_keepalive_and_format(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "qwen", "hi", "--keepalive", "10m", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = daemon.bodies("/api/generate")[0]
    assert body["keep_alive"] == "10m" and body["format"] == "json"


def test_run_rejects_a_bad_keepalive(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "qwen", "hi", "--keepalive", "soon"])
    assert result.exit_code == 2
    assert "--keepalive" in result.stderr
    assert daemon.requests == []


def test_run_verbose_prints_timings_to_stderr(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "qwen", "hi", "--verbose"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "The sky is blue.\n"
    assert result.stderr.splitlines() == [
        "total duration:       1.5s",
        "load duration:        2ms",
        "prompt eval count:    10 token(s)",
        "prompt eval duration: 100ms",
        "prompt eval rate:     100.00 tokens/s",
        "eval count:           20 token(s)",
        "eval duration:        400ms",
        "eval rate:            50.00 tokens/s",
    ]


def test_run_pulls_a_missing_model_first(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "new:latest", "hi"])
    assert result.exit_code == 0, result.output
    # /api/tags: no local hf.co model is what the short name means, so it is pulled
    assert [p for _, p, _ in daemon.requests] == ["/api/show", "/api/tags", "/api/pull", "/api/show", "/api/generate"]
    assert "pulling manifest" in result.stderr and "success" in result.stderr
    assert result.stdout == "The sky is blue.\n"


def test_run_unknown_model_that_cannot_be_pulled(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["run", "nope", "hi"])
    assert result.exit_code == 1
    assert result.stderr.endswith("Error: pull model manifest: nope not found\n")
    assert "Traceback" not in result.output


def test_repl_sends_the_conversation_and_prints_the_answer(daemon: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(daemon, ["run", "smollm2:135m"], input="hello\n/bye\n")
    assert result.exit_code == 0, result.output
    chats = daemon.bodies("/api/chat")
    assert chats[0]["messages"] == []  # the model is loaded before the first prompt
    assert chats[1]["messages"] == [{"role": "user", "content": "hello"}]
    assert chats[1]["stream"] is True
    assert ">>> Hello there!\n\n>>> " in result.stdout


def test_repl_tells_about_help_once(daemon: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(daemon, ["run", "smollm2:135m"], input="hello\nagain\n/bye\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Send a message (/? for help)\n>>> ")
    assert result.stdout.count("/? for help") == 1


def test_repl_second_turn_includes_the_first_exchange(daemon: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(daemon, ["run", "smollm2:135m"], input="hello\nand then?\n")
    assert result.exit_code == 0, result.output
    chats = daemon.bodies("/api/chat")
    assert chats[2]["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "and then?"},
    ]
    assert "Hello there!" in result.stdout and "Second answer." in result.stdout
    assert result.stdout.endswith(">>> \n")  # Ctrl+D (end of input) leaves cleanly


def test_repl_help_set_and_multiline(daemon: FakeDaemon, tty_stdin: None) -> None:
    script = '/?\n/set parameter temperature 0.5\n/set system Be terse.\n"""first\nsecond"""\n/clear\n/nope\n/bye\n'
    result = invoke(daemon, ["run", "smollm2:135m", "--keepalive", "1h"], input=script)
    assert result.exit_code == 0, result.output
    assert "/bye            Exit" in result.stdout
    assert "Set parameter 'temperature' to '0.5'" in result.stdout
    assert "Cleared session context" in result.stdout
    assert "Unknown command '/nope'. Type /? for help" in result.stdout
    chat = daemon.bodies("/api/chat")[1]
    assert chat["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first\nsecond"},
    ]
    assert chat["options"] == {"temperature": 0.5}
    assert chat["keep_alive"] == "1h"


def test_repl_verbose_prints_timings_after_each_answer(daemon: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(daemon, ["run", "smollm2:135m", "--verbose"], input="hi\n")
    assert result.exit_code == 0, result.output
    assert "eval rate:            50.00 tokens/s" in result.stderr


def test_repl_keeps_going_after_an_error(daemon: FakeDaemon, tty_stdin: None) -> None:
    calls = 0
    original = daemon.route_api_chat

    def flaky(body: Any) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            return ndjson({"message": {"role": "assistant", "content": "Hal"}, "done": False}, {"error": "oops"})
        return original(body)

    daemon.route_api_chat = flaky  # type: ignore[method-assign]
    result = invoke(daemon, ["run", "smollm2:135m"], input="one\ntwo\n")
    assert result.exit_code == 0, result.output
    assert "Error: oops" in result.stderr
    assert daemon.bodies("/api/chat")[2]["messages"] == [{"role": "user", "content": "two"}]


# -- run: the REPL's sessions, parameters, Ctrl+C and word wrap ---------------------------------------------


def test_repl_save_then_load_keeps_the_conversation(daemon: FakeDaemon, tty_stdin: None) -> None:
    script = "/set parameter temperature 0\n/set system Be brief.\nhello\n/save mysession\n/load mysession\nmore\n"
    result = invoke(daemon, ["run", "smollm2:135m"], input=script)
    assert result.exit_code == 0, result.output
    assert "Created new model 'mysession'" in result.stdout
    (create,) = daemon.bodies("/api/create")
    assert create == {
        "model": "mysession",
        "from": "smollm2:135m",
        "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hello there!"}],
        "parameters": {"temperature": 0.0},
        "system": "Be brief.",
        "stream": True,
    }
    # /load shows the stored conversation, and does not send it again: the daemon puts it first itself
    assert "Loading model 'mysession'\n>>> hello\nHello there!\n\n>>> " in result.stdout
    last = daemon.bodies("/api/chat")[-1]
    assert last["model"] == "mysession"
    assert last["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "more"}]


def test_repl_shows_a_models_stored_conversation_and_saves_it_again(daemon: FakeDaemon, tty_stdin: None) -> None:
    stored = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A pirate."}]
    daemon.created["pirate:latest"] = {"messages": stored}
    daemon.models["pirate:latest"] = dict(daemon.models["qwen:latest"], name="pirate:latest")
    result = invoke(daemon, ["run", "pirate"], input="hi\n/save pirate2\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(">>> Who are you?\nA pirate.\n\nSend a message (/? for help)\n>>> Hello there!")
    assert daemon.bodies("/api/chat")[1]["messages"] == [{"role": "user", "content": "hi"}]
    (create,) = daemon.bodies("/api/create")
    assert create["from"] == "pirate" and "parameters" not in create and "system" not in create
    assert create["messages"] == [
        *stored,
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello there!"},
    ]


def test_repl_load_and_save_errors_keep_the_session(daemon: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(daemon, ["run", "smollm2:135m"], input="/load nope\n/save\n/save bad\nhi\n")
    assert result.exit_code == 0, result.output
    assert "Error: model 'nope' not found" in result.stderr
    assert "Usage:\n  /save <modelname>" in result.stdout
    assert daemon.bodies("/api/chat")[-1]["model"] == "smollm2:135m"

    def refuse(body: Any) -> httpx.Response:
        return error(400, "invalid model name")

    daemon.route_api_create = refuse  # type: ignore[method-assign]
    result = invoke(daemon, ["run", "smollm2:135m"], input="/save x\n")
    assert result.exit_code == 0 and "Error: invalid model name" in result.stderr


def test_repl_load_of_a_model_that_cannot_chat_keeps_the_old_one(minilm: FakeDaemon, tty_stdin: None) -> None:
    chat = minilm.route_api_chat

    def no_chat_for_minilm(body: Any) -> httpx.Response:
        if body["model"] == "minilm":
            return error(400, '"minilm" does not support chat')
        return chat(body)

    minilm.route_api_chat = no_chat_for_minilm  # type: ignore[method-assign]
    result = invoke(minilm, ["run", "smollm2:135m"], input="hello\n/load minilm\nagain\n")
    assert result.exit_code == 0, result.output
    assert 'Error: "minilm" does not support chat' in result.stderr
    last = minilm.bodies("/api/chat")[-1]
    assert last["model"] == "smollm2:135m" and len(last["messages"]) == 3  # the conversation goes on


def test_repl_set_parameter_is_typed_and_checked(daemon: FakeDaemon, tty_stdin: None) -> None:
    script = (
        "/set parameter temperature hot\n/set parameter colour red\n/set parameter num_ctx 4096\n"
        "/set parameter stop <|im_end|> User:\n/set parameter seed 42\n/set format json\nhi\n"
    )
    result = invoke(daemon, ["run", "smollm2:135m"], input=script)
    assert result.exit_code == 0, result.output
    assert "Error: parameter 'temperature' must be a number, got 'hot'" in result.stderr
    assert "Error: unknown parameter 'colour'" in result.stderr
    chat = daemon.bodies("/api/chat")[1]
    assert chat["options"] == {"num_ctx": 4096, "stop": ["<|im_end|>", "User:"], "seed": 42}
    assert chat["format"] == "json"


def test_repl_multiline_system(daemon: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(daemon, ["run", "smollm2:135m"], input='/set system """You are\n  a poet."""\nhi\n')
    assert result.exit_code == 0, result.output
    assert "Set system message." in result.stdout
    assert daemon.bodies("/api/chat")[1]["messages"][0] == {"role": "system", "content": "You are\n  a poet."}


def test_repl_ctrl_c_stops_the_answer_closes_the_stream_and_goes_on(
    daemon: FakeDaemon, tty_stdin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.answers = ["one two three four five", "Second answer."]
    echo = run_module.click.echo
    pieces = 0

    def interrupting_echo(message: Any = None, **kwargs: Any) -> None:
        nonlocal pieces
        if message == "two ":
            pieces += 1
            if pieces == 1:
                raise KeyboardInterrupt  # Ctrl+C while the second word of the first answer is written
        echo(message, **kwargs)

    monkeypatch.setattr("localllm_cli.repl.click.echo", interrupting_echo)
    result = invoke(daemon, ["run", "smollm2:135m"], input="first\nsecond\n")
    assert result.exit_code == 0, result.output
    assert ">>> one \n\n>>> " in result.stdout  # the answer stops; the prompt comes back
    assert "Second answer." in result.stdout
    chats = daemon.bodies("/api/chat")
    assert chats[2]["messages"] == [{"role": "user", "content": "second"}]  # the stopped turn is dropped
    assert daemon.stream is not None and daemon.stream.closed


def test_run_wraps_words_on_a_terminal(daemon: FakeDaemon, tty_stdin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "_stdout_is_terminal", lambda: True)
    daemon.answers = ["aaaa bbbb cccc dddd eeee ffff"]
    result = invoke(daemon, ["run", "smollm2:135m"], input="hi\n", env={"COLUMNS": "16"})
    assert result.exit_code == 0, result.output
    answer = result.stdout.split(">>> ")[1]
    assert answer == "aaaa bbbb cccc \ndddd eeee ffff\n\n"
    result = invoke(daemon, ["run", "smollm2:135m", "--nowordwrap"], input="hi\n", env={"COLUMNS": "16"})
    assert "aaaa bbbb cccc dddd eeee ffff\n" in result.stdout
    result = invoke(daemon, ["run", "qwen", "hi"], env={"COLUMNS": "11"})
    assert result.stdout == "The sky is\nblue.\n"


def test_run_does_not_wrap_when_stdout_is_not_a_terminal(daemon: FakeDaemon, tty_stdin: None) -> None:
    daemon.answers = ["aaaa bbbb cccc dddd eeee ffff"]
    result = invoke(daemon, ["run", "smollm2:135m"], input="hi\n", env={"COLUMNS": "16"})
    assert "aaaa bbbb cccc dddd eeee ffff\n" in result.stdout
    assert "\x1b" not in result.stdout


# -- create -------------------------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


MODELFILE = """FROM hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0
PARAMETER temperature 0.2
PARAMETER stop "<|im_end|>"
SYSTEM You are terse.
MESSAGE user hi
MESSAGE assistant hello
LICENSE MIT
"""


def test_create_sends_the_modelfile_as_ollamas_create_body(daemon: FakeDaemon, tmp_path: Path) -> None:
    path = write(tmp_path / "Modelfile", MODELFILE)
    result = invoke(daemon, ["create", "mine:v1", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert daemon.bodies("/api/create") == [to_create_request(parse(MODELFILE), model="mine:v1")]
    assert daemon.bodies("/api/create")[0]["from"] == "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0"
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "gathering model components",
        f"using existing layer {LAYER}",
        "creating new layer sha256:" + "ee" * 32,
        "writing manifest",
        "success",
    ]
    assert [p for _, p, _ in daemon.requests] == ["/api/create"]


def test_create_reads_Modelfile_in_the_current_folder_by_default(
    daemon: FakeDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "Modelfile", "FROM qwen\nSYSTEM hi\n")
    monkeypatch.chdir(tmp_path)
    result = invoke(daemon, ["create", "mine"])
    assert result.exit_code == 0, result.output
    assert daemon.bodies("/api/create") == [{"model": "mine", "from": "qwen", "system": "hi", "stream": True}]


def test_create_uploads_a_local_gguf_then_sends_files(daemon: FakeDaemon, tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(256)) * 10
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    write(tmp_path / "models" / "tiny.gguf", data)
    adapter = b"GGUF-lora"
    adapter_digest = f"sha256:{hashlib.sha256(adapter).hexdigest()}"
    write(tmp_path / "lora.gguf", adapter)
    # paths are taken from the Modelfile's folder, not from where the command runs
    path = write(tmp_path / "Modelfile", "FROM ./models/tiny.gguf\nADAPTER ../lora.gguf\nPARAMETER num_ctx 512\n")
    path = write(tmp_path / "sub" / "Modelfile", path.read_text().replace("./models", "../models"))
    result = invoke(daemon, ["create", "tiny", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert daemon.blobs == {digest: data, adapter_digest: adapter}
    assert [(m, p, d) for m, p, d in daemon.requests if p == "/api/blobs"] == [
        ("HEAD", "/api/blobs", digest),
        ("POST", "/api/blobs", digest),
        ("HEAD", "/api/blobs", adapter_digest),
        ("POST", "/api/blobs", adapter_digest),
    ]
    assert daemon.bodies("/api/create") == [
        {
            "model": "tiny",
            "files": {"tiny.gguf": digest},
            "adapters": {"lora.gguf": adapter_digest},
            "parameters": {"num_ctx": 512},
            "stream": True,
        }
    ]
    assert f"copying file {digest} 100%" in result.stderr.splitlines()
    # the second time the daemon has both blobs: nothing is uploaded again
    daemon.requests.clear()
    result = invoke(daemon, ["create", "tiny2", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert [m for m, p, _ in daemon.requests if p == "/api/blobs"] == ["HEAD", "HEAD"]
    assert "copying file" not in result.stderr


def test_create_from_a_folder_of_ggufs(daemon: FakeDaemon, tmp_path: Path) -> None:
    write(tmp_path / "weights" / "a.gguf", b"first")
    write(tmp_path / "weights" / "README.md", "not a model")
    path = write(tmp_path / "Modelfile", "FROM weights\n")
    result = invoke(daemon, ["create", "m", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert daemon.bodies("/api/create")[0]["files"] == {"a.gguf": f"sha256:{hashlib.sha256(b'first').hexdigest()}"}


@pytest.mark.parametrize(
    ("modelfile", "message"),
    [
        ("FROM ./missing.gguf\n", "Error: ./missing.gguf: no such file (a path is taken from the Modelfile's folder)"),
        ("FROM model.gguf\n", "Error: model.gguf: no such file"),
        ("FROM qwen\nADAPTER lora\n", "Error: ADAPTER lora: no such file"),
        ("FROM qwen\n\nPARAMETER temperature hot\n", "line 3: parameter 'temperature' must be a number, got 'hot'"),
        ("SYSTEM hi\n", "line 1: no FROM instruction"),
        ("FROM qwen\nTEMPLATE {{ .Prompt }}\n", "line 2: TEMPLATE looks like an Ollama Go template"),
    ],
)
def test_create_refuses_a_bad_modelfile_before_sending_anything(
    daemon: FakeDaemon, tmp_path: Path, modelfile: str, message: str
) -> None:
    path = write(tmp_path / "Modelfile", modelfile)
    result = invoke(daemon, ["create", "m", "-f", str(path)])
    assert result.exit_code == 1
    assert message in result.stderr
    if "line" in message:
        assert f"Error: {path}: line" in result.stderr
    assert daemon.bodies("/api/create") == []
    assert "Traceback" not in result.output


def test_create_without_a_modelfile(daemon: FakeDaemon, tmp_path: Path) -> None:
    result = invoke(daemon, ["create", "m", "-f", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot read {tmp_path / 'nope'}: No such file or directory\n"


def test_create_from_an_unknown_model_is_the_daemons_error(daemon: FakeDaemon, tmp_path: Path) -> None:
    result = invoke(daemon, ["create", "m", "-f", str(write(tmp_path / "Modelfile", "FROM nothing\n"))])
    assert result.exit_code == 1
    assert result.stderr.endswith("Error: model 'nothing' not found\n")


# -- embed, and run with an embedding model ------------------------------------------------------------------


@pytest.fixture
def minilm(daemon: FakeDaemon) -> FakeDaemon:
    daemon.models["minilm:latest"] = dict(daemon.models["qwen:latest"], name="minilm:latest")
    return daemon


def test_embed_prints_one_json_vector_per_text(minilm: FakeDaemon) -> None:
    result = invoke(minilm, ["embed", "minilm", "hello", "a longer text"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [[0.5, 0.5], [1.3, 0.5]]
    assert minilm.bodies("/api/embed") == [{"model": "minilm", "input": ["hello", "a longer text"]}]


def test_embed_reads_lines_from_stdin_and_passes_its_options(minilm: FakeDaemon) -> None:
    args = ["embed", "minilm", "--no-truncate", "--dimensions", "2", "--keepalive", "1m"]
    result = invoke(minilm, args, input="one\n\ntwo\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    assert minilm.bodies("/api/embed") == [
        {"model": "minilm", "input": ["one", "two"], "truncate": False, "dimensions": 2, "keep_alive": "1m"}
    ]


def test_embed_needs_some_text(minilm: FakeDaemon) -> None:
    result = invoke(minilm, ["embed", "minilm"], input="")
    assert result.exit_code == 2 and "stdin holds no text" in result.stderr
    result = invoke(minilm, ["embed", "nope", "x"])  # embed pulls a missing model, as run does
    assert result.exit_code == 1 and result.stderr.endswith("Error: pull model manifest: nope not found\n")


def test_run_an_embedding_model_prints_its_vector(minilm: FakeDaemon) -> None:
    result = invoke(minilm, ["run", "minilm", "hello"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [0.5, 0.5]
    assert minilm.bodies("/api/embed") == [{"model": "minilm", "input": "hello"}]
    assert minilm.bodies("/api/generate") == []


def test_run_an_embedding_model_interactively(minilm: FakeDaemon, tty_stdin: None) -> None:
    result = invoke(minilm, ["run", "minilm"], input="hello\n\n/bye\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == ">>> [0.5, 0.5]\n>>> >>> "


# -- list --library ---------------------------------------------------------------------------------------------


def test_list_library_shows_names_and_what_they_pull(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["list", "--library"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "FROM"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows["qwen2.5:0.5b"] == "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert len(rows) == len(library.entries())
    assert daemon.requests == []  # the library ships with the CLI


# -- connection errors, version, serve ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("args", [["list"], ["run", "m", "hi"], ["pull", "m"], ["rm", "m"]])
def test_no_daemon_is_a_clean_error(args: list[str]) -> None:
    port = free_port()
    result = CliRunner().invoke(cli, args, env={"LOCALLLM_HOST": f"127.0.0.1:{port}"})
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: could not connect to the localllm daemon at http://127.0.0.1:{port}: nothing is listening there. "
        f"Start it with 'localllm serve' (or {service_hint()})\n"
    )
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_host_option_overrides_the_environment() -> None:
    port = free_port()
    result = CliRunner().invoke(cli, ["--host", f":{port}", "ps"], env={"LOCALLLM_HOST": "127.0.0.1:1"})
    assert f"http://127.0.0.1:{port}" in result.stderr


def test_bad_host_is_a_clean_error() -> None:
    result = CliRunner().invoke(cli, ["list"], env={"LOCALLLM_HOST": "ftp://x"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: LOCALLLM_HOST='ftp://x'")


def test_version(daemon: FakeDaemon) -> None:
    result = invoke(daemon, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "localllm version is 0.1.0\n"
    result = CliRunner().invoke(cli, ["--version"], env={"LOCALLLM_HOST": f"127.0.0.1:{free_port()}"})
    assert result.exit_code == 0
    assert "Warning: could not connect to a running localllm daemon" in result.stdout
    assert "Warning: client version is" in result.stdout


def test_serve_help_lists_every_variable_with_its_default() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()

    def line_of(name: str) -> str:
        return next(line for line in lines if line.strip().startswith(name + " "))

    assert "(default: 127.0.0.1:11434)" in line_of("LOCALLLM_HOST")
    assert "(default: <user data dir>/models)" in line_of("LOCALLLM_MODELS")
    assert "(default: 5m)" in line_of("LOCALLLM_KEEP_ALIVE")
    from localllm.config import VARIABLES

    for variable in VARIABLES:
        assert line_of(variable.name)


@pytest.fixture
def fake_daemon_module(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stand in for `localllm.daemon` so `serve` starts nothing; record the settings it is given."""
    started: list[Settings] = []
    module = types.ModuleType("localllm.daemon")
    module.serve = started.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "localllm.daemon", module)
    return started


def test_serve_bad_variable_exits_1_naming_it(fake_daemon_module: list[Settings]) -> None:
    result = CliRunner().invoke(cli, ["serve"], env={"LOCALLLM_KEEP_ALIVE": "forever"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: LOCALLLM_KEEP_ALIVE='forever'")
    assert fake_daemon_module == []


def test_serve_starts_the_daemon_with_settings_from_the_environment(
    fake_daemon_module: list[Settings], tmp_path: Any
) -> None:
    env = {"LOCALLLM_KEEP_ALIVE": "10m", "LOCALLLM_MODELS": str(tmp_path), "LOCALLLM_HOST": None}
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    (settings,) = fake_daemon_module
    assert settings.keep_alive == 600.0
    assert settings.models_dir == tmp_path
    assert settings.host.base_url == "http://127.0.0.1:11434"
    result = CliRunner().invoke(cli, ["--host", "0.0.0.0:8080", "start"], env=env)
    assert result.exit_code == 0, result.output
    assert fake_daemon_module[1].host.base_url == "http://0.0.0.0:8080"


# -- render -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1_234_567, "1.2 MB"), (270_000_000, "270 MB"), (4.7e9, "4.7 GB")],
)
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text


def test_human_number() -> None:
    assert human_number(134_515_008) == "135M"
    assert human_number(1_711_376_384) == "1.7B"
    assert human_number(8_000_000_000) == "8B"


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (500, "500ns"),
        (1_500, "1.5µs"),
        (137_100_000, "137.1ms"),
        (1_234_567_891, "1.234567891s"),
        (62_000_000_000, "1m2s"),
        (3_600_000_000_000, "1h0m0s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_human_time_and_until() -> None:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert human_time(now - timedelta(seconds=0.5), now) == "Less than a second ago"
    assert human_time(now - timedelta(minutes=2), now) == "2 minutes ago"
    assert human_time(now - timedelta(minutes=61), now) == "About an hour ago"
    assert human_time(now - timedelta(days=10), now) == "10 days ago"
    assert human_time(now + timedelta(minutes=4, seconds=59), now) == "4 minutes from now"
    assert human_time(now + timedelta(days=365 * 30), now) == "Forever"
    assert until("2025-01-01T00:00:30Z", now) == "30 seconds from now"
    assert until("2024-12-31T23:59:00Z", now) == "Stopping..."
    assert until(None, now) == "Forever"


def test_parse_timestamp_reads_go_and_python_forms() -> None:
    expected = datetime(2024, 5, 1, 12, 34, 56, 123456, tzinfo=timezone(timedelta(hours=-7)))
    assert parse_timestamp("2024-05-01T12:34:56.123456789-07:00") == expected
    assert parse_timestamp("2024-05-01T19:34:56.123456Z") == expected
    assert parse_timestamp("2024-05-01T19:34:56") == datetime(2024, 5, 1, 19, 34, 56, tzinfo=timezone.utc)
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(5) is None


def test_processor() -> None:
    assert processor(100, 0) == "100% CPU"
    assert processor(100, 100) == "100% GPU"
    assert processor(1000, 520) == "48%/52% CPU/GPU"


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["z", ""]]) == "A      BB\nxxx    y\nz"


def test_progress_bar() -> None:
    line = progress_bar("pulling 270cba1bd510", 1_200_000, 1_200_000, 3_100_000, 0, 80)
    assert line.startswith("pulling 270cba1bd510: 100% ▕█")
    assert line.endswith("█▏ 1.2 MB/1.2 MB  3.1 MB/s  0s")
    assert len(line) <= 80
    half = progress_bar("x", 50, 100, 10, 5.4, 60)
    assert " 50% ▕" in half and half.endswith(" 50 B/100 B  10 B/s  5s")
    bar = half[half.index("▕") + 1 : half.index("▏")]
    assert bar.count("█") == len(bar) // 2


def test_pull_progress_redraws_in_place_on_a_tty() -> None:
    clock = iter([0.0, 0.0, 1.0, 1.05, 2.0, 2.0, 2.0])
    progress = PullProgress(tty=True, width=80, clock=lambda: next(clock))
    first = progress.update({"status": "pulling manifest"})
    assert first.startswith("\x1b[?25l") and "\rpulling manifest\x1b[K\n" in first
    layer = {"status": "pulling dddddddddddd", "digest": LAYER, "total": 2_000_000}
    second = progress.update({**layer, "completed": 0})
    assert "\x1b[1A" in second and second.count("\n") == 2
    third = progress.update({**layer, "completed": 1_000_000})
    assert "\x1b[2A" in third and " 50% " in third
    assert progress.update({**layer, "completed": 1_100_000}) == ""  # throttled
    done = progress.update({**layer, "completed": 2_000_000})
    assert "100% " in done and "2 MB/2 MB  1 MB/s  0s" in done
    assert progress.update({"status": "success"}).endswith("\rsuccess\x1b[K\n")
    assert progress.finish().endswith("\x1b[?25h")


def test_pull_progress_without_a_tty_writes_lines_once() -> None:
    progress = PullProgress(tty=False, clock=lambda: 0.0)
    layer = {"status": "pulling dddddddddddd", "digest": LAYER, "total": 100}
    out = [progress.update({"status": "pulling manifest"})]
    out += [progress.update({**layer, "completed": c}) for c in (0, 50, 100, 100)]
    out += [progress.update({"status": "success"}), progress.finish()]
    text = "".join(out)
    assert text.splitlines()[0] == "pulling manifest"
    assert text.splitlines()[1].startswith("pulling dddddddddddd: 100% ▕")
    assert text.splitlines()[2:] == ["success"]


def test_timings_skips_missing_counters() -> None:
    assert timings({"eval_count": 4, "eval_duration": 2_000_000_000}).splitlines() == [
        "eval count:           4 token(s)",
        "eval duration:        2s",
        "eval rate:            2.00 tokens/s",
    ]
    assert timings({}) == ""
