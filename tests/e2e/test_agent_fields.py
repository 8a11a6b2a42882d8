"""What the coding agents send, through the real `openai` and `anthropic` packages against a real daemon and
the tiny chat model (issue 27: 1, 2): Codex CLI's `client_metadata` and Claude Code's `context_management` and
`system` messages inside `messages` get 200s, and what was ignored comes back in `X-Localllm-Ignored-Fields`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ..conftest import CHAT_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

CHAT = f"hf.co/{CHAT_REPO}"
HEADER = "x-localllm-ignored-fields"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("agents"), hub, (CHAT_REPO,)) as d:
        yield d


def test_codex_responses_with_client_metadata(server: Daemon) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    items: Any = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Once upon a time"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
    ]
    raw = client.responses.with_raw_response.create(
        model=CHAT,
        input=items,
        max_output_tokens=4,
        include=["reasoning.encrypted_content"],
        parallel_tool_calls=False,
        prompt_cache_key="session-1",
        store=False,
        text={"verbosity": "low"},
        extra_body={"client_metadata": {"session_id": "s"}, "codex_next_field": {"a": 1}},
        extra_headers={"user-agent": "codex_exec/0.171.0"},
    )
    assert raw.headers[HEADER] == "codex_next_field", "client_metadata is metadata: accepted without a word"
    assert raw.parse().status == "incomplete" and raw.parse().output_text


def test_claude_code_messages_with_context_management_and_a_system_message(server: Daemon) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    messages: Any = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Once upon a time", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "t", "signature": "sig"}, {"type": "text", "text": "there"}],
        },
        {"role": "system", "content": "Keep it short."},
        {"role": "user", "content": "was a"},
    ]
    raw = client.messages.with_raw_response.create(
        model=CHAT,
        max_tokens=4,
        system=[{"type": "text", "text": "You are a storyteller.", "cache_control": {"type": "ephemeral"}}],
        messages=messages,
        metadata={"user_id": "u"},
        extra_body={
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "claude_next_field": True,
        },
        extra_headers={"anthropic-beta": "context-management-2025-06-27", "user-agent": "claude-cli/2.1.197"},
    )
    assert raw.headers[HEADER] == "claude_next_field"
    message = raw.parse()
    assert message.stop_reason == "max_tokens" and message.content[0].type == "text"
    assert message.usage.input_tokens > 0


def test_claude_codes_stream_starts_with_the_real_input_tokens(server: Daemon) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "Once upon a time"}]
    with client.messages.stream(model=CHAT, max_tokens=4, messages=messages) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = events[0]
    assert start.type == "message_start"
    counted = client.messages.count_tokens(model=CHAT, messages=messages).input_tokens
    assert start.message.usage.input_tokens == counted > 0, "clients budget their context from message_start"
    assert final.usage.output_tokens == 4


def test_openai_chat_on_a_bare_base_url_reports_what_it_ignored(server: Daemon) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)  # no /v1: llama-server's paths
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Once upon a time"}],
        max_tokens=4,
        user="u",
        store=False,
        extra_body={"some_vendor_knob": 3},
    )
    assert raw.headers[HEADER] == "some_vendor_knob" and raw.parse().choices[0].message.content
    assert [m.id for m in client.models.list()] == [f"{CHAT}:latest"] or client.models.list().data


def test_ollama_fields_at_the_top_level_are_reported(server: Daemon) -> None:
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Once upon a time"}],
        "stream": False,
        "options": {"num_predict": 4},
        "temperature": 0,
        "max_output_tokens": 16,
        "tool_choice": "auto",
    }
    r = httpx.post(server.url + "/api/chat", json=body, timeout=60)
    assert r.status_code == 200 and r.headers[HEADER] == "temperature, max_output_tokens, tool_choice"
