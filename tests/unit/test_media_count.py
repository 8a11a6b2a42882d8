"""Media counted as the positions they take, before the runner evaluates the prompt: the service asks the
runner's count with the prompt's media (`Runner.tokenize(text, media)`) wherever it counts a prompt. Over the
fake runner (a token a word, MEDIA_TOKENS per media item) and a model whose `vision` is the one thing faked;
tests/e2e/test_media_count.py holds the same against the real projector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..fakes import MEDIA_TOKENS, FakeFactory
from ..media import b64, data_url, png
from .test_media import client_for, last_job, vision  # noqa: F401 (the fixture: `tiny` and `small` read images)

pytestmark = pytest.mark.usefixtures("vision")

PNG = png()
TEXT = "What is in it?"


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


def anthropic_messages(image: bool) -> list[dict[str, Any]]:
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}}
    content = [block, {"type": "text", "text": TEXT}] if image else [{"type": "text", "text": TEXT}]
    return [{"role": "user", "content": content}]


def test_the_counting_endpoints_count_an_image_as_its_positions(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory):
        counts = {}
        for image in (True, False):
            body = {"model": "tiny", "messages": anthropic_messages(image)}
            reply = client.post("/v1/messages/count_tokens", json=body)
            assert reply.status_code == 200, reply.text
            parts: list[Any] = [{"type": "input_text", "text": TEXT}]
            if image:
                parts.insert(0, {"type": "input_image", "image_url": data_url(PNG)})
            body = {"model": "tiny", "input": [{"role": "user", "content": parts}]}
            responses = client.post("/v1/responses/input_tokens", json=body)
            assert responses.status_code == 200, responses.text
            counts[image] = (reply.json()["input_tokens"], responses.json()["input_tokens"])
        # "[user]<__media__>What" is one word as "[user]What" is: the difference is the image alone
        assert counts[True] == (counts[False][0] + MEDIA_TOKENS, counts[False][1] + MEDIA_TOKENS)


def test_a_stream_opens_with_the_prompt_counted_with_its_image(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory):
        text = {"model": "tiny", "messages": anthropic_messages(False)}
        counted = client.post("/v1/messages/count_tokens", json=text).json()["input_tokens"] + MEDIA_TOKENS
        body = {"model": "tiny", "max_tokens": 8, "stream": True, "messages": anthropic_messages(True)}
        with client.stream("POST", "/v1/messages", json=body) as reply:
            assert reply.status_code == 200
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
        start = json.loads(lines[0].removeprefix("data: "))
        assert start["type"] == "message_start"
        assert start["message"]["usage"]["input_tokens"] == counted


def test_truncate_drops_the_turn_whose_image_makes_the_prompt_too_long(tmp_path: Path, factory: FakeFactory) -> None:
    """`small` has a context of 256: 192 for the prompt, 64 kept for the answer. Its first turn's words fit; with
    its image's 16 positions they do not, so that turn goes, image and all."""
    words = 185

    def chat(image: bool) -> dict[str, Any]:
        first: dict[str, Any] = {"role": "user", "content": "w " * words}
        if image:
            first["images"] = [b64(PNG)]
        messages = [first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "last"}]
        return {"model": "small", "messages": messages, "stream": False}

    for client in client_for(tmp_path, factory):
        kept = client.post("/api/chat", json=chat(False))
        assert kept.status_code == 200, kept.text
        assert "truncated" not in kept.json() and last_job(factory).prompt.count("w ") >= words - 1
        cut = client.post("/api/chat", json=chat(True))
        assert cut.status_code == 200, cut.text
        job = last_job(factory)
        assert job.media == () and "w w" not in job.prompt, "the first turn went, image and all"
        assert cut.json()["truncated"] >= words + MEDIA_TOKENS
