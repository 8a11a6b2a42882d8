"""Images and audio counted as the positions they take, before the runner evaluates the prompt: Anthropic's
`count_tokens` and Responses' `input_tokens` (the `anthropic` and `openai` packages) equal what the runner then
evaluates for the same request; a chat dropping old turns to fit (`truncate`) drops the turn whose image makes it
too long; a key's daily quota reserves the image's positions. The tiny vision model made here
(tests/mediamodels.py), created from its two GGUF files, on a real daemon with API keys."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ..hubstub import HubStub
from ..media import data_url, png, wav
from ..mediamodels import AUDIO_TOKENS, IMAGE_TOKENS, VisionModel
from .conftest import Daemon, localllm_command, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

KEY = "media-count-key-0123456789"
MODEL = "vlm"
HEARS = "vlm-audio"
TEXT = "What is in this picture?"
IMAGE = png(24, 24, seed=3)
OTHER = png(24, 24, seed=4)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create(d: Daemon, name: str, model: VisionModel, folder: Path) -> None:
    modelfile = folder / f"{name}.Modelfile"
    modelfile.write_text(f"FROM {model.model}\nFROM {model.projector}\nPARAMETER temperature 0\n")
    made = d.cli("create", name, "-f", str(modelfile))
    assert made.returncode == 0, made.stderr


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_vlm: VisionModel, tiny_vlm_audio: VisionModel
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("mediacount")
    with HubStub({}) as hub:
        d = start_daemon(tmp, hub, LOCALLLM_NUM_PARALLEL="1", LOCALLLM_API_KEYS=KEY, LOCALLLM_API_KEY=KEY)
        try:
            create(d, MODEL, tiny_vlm, tmp)
            create(d, HEARS, tiny_vlm_audio, tmp)
            yield d
        finally:
            stop_daemon(d)


def claude(server: Daemon, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def image_block(image: bytes) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(image)}}


def count(server: Daemon, messages: list[Any]) -> int:
    return claude(server).messages.count_tokens(model=MODEL, messages=messages).input_tokens


def evaluated(server: Daemon, messages: list[Any]) -> int:
    """The prompt the runner evaluated for the same request (its prompt_eval_count, cached tokens included)."""
    made = claude(server).messages.create(model=MODEL, max_tokens=1, messages=messages)
    return made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0)


def test_anthropic_count_tokens_counts_an_image_as_the_runner_evaluates_it(server: Daemon) -> None:
    with_image = [{"role": "user", "content": [image_block(IMAGE), {"type": "text", "text": TEXT}]}]
    text_only = [{"role": "user", "content": TEXT}]
    counted, plain = count(server, with_image), count(server, text_only)
    assert counted == evaluated(server, with_image)
    assert plain == evaluated(server, text_only)
    # the image is its 16 positions (the text beside the marker may tokenize a token apart), not its marker's text
    assert IMAGE_TOKENS - 2 <= counted - plain <= IMAGE_TOKENS + 2
    two = [{"role": "user", "content": [image_block(IMAGE), image_block(OTHER), {"type": "text", "text": TEXT}]}]
    assert count(server, two) == evaluated(server, two)
    assert count(server, two) - counted == IMAGE_TOKENS


def test_responses_input_tokens_count_images_and_audio(server: Daemon) -> None:
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    url = server.url + "/v1/responses/input_tokens"
    image: Any = [{"type": "input_image", "image_url": data_url(IMAGE)}, {"type": "input_text", "text": TEXT}]
    clip: Any = [
        {"type": "input_audio", "input_audio": {"data": b64(wav(1.0)), "format": "wav"}},
        {"type": "input_text", "text": TEXT},
    ]
    for model, content, positions in ((MODEL, image, IMAGE_TOKENS), (HEARS, clip, AUDIO_TOKENS)):
        inputs: Any = [{"role": "user", "content": content}]
        body = {"model": model, "input": inputs}
        reply = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        assert reply.status_code == 200, reply.text
        counted = reply.json()["input_tokens"]
        made = oai.responses.create(model=model, input=inputs, max_output_tokens=1)
        assert made.usage is not None
        assert counted == made.usage.input_tokens
        plain = httpx.post(
            url, json={"model": model, "input": TEXT}, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        )
        assert positions - 2 <= counted - plain.json()["input_tokens"] <= positions + 2


def ollama_chat(server: Daemon, messages: list[Any], **options: Any) -> httpx.Response:
    body = {"model": MODEL, "stream": False, "messages": messages, "options": {"temperature": 0, **options}}
    return httpx.post(server.url + "/api/chat", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


CTX = 256  # llama.cpp pads a context to a multiple of 256: the smallest one there is
ANSWER = 4  # tokens kept free for the answer: the prompt may take CTX - ANSWER


def test_truncate_drops_the_old_turn_whose_image_makes_it_too_long(server: Daemon) -> None:
    later = [{"role": "assistant", "content": "A picture."}, {"role": "user", "content": TEXT}]

    def first(filler: int, image: bool) -> list[Any]:
        text = "Look at this." + " a" * filler
        if image:
            return [{"role": "user", "content": [image_block(IMAGE), {"type": "text", "text": text}]}, *later]
        return [{"role": "user", "content": text}, *later]

    # the oldest turn padded with words until the whole prompt, image included, is a few tokens past what fits
    room, filler = CTX - ANSWER, 0
    whole = count(server, first(filler, True))
    while whole <= room + 4:
        filler += room + 6 - whole
        whole = count(server, first(filler, True))
    without = count(server, first(filler, False))
    assert without <= room < whole  # the image is what makes it too long

    def ollama_form(messages: list[Any]) -> list[Any]:
        head = messages[0]
        if isinstance(head["content"], list):
            head = {"role": "user", "content": head["content"][1]["text"], "images": [b64(IMAGE)]}
        return [head, *messages[1:]]

    kept = ollama_chat(server, ollama_form(first(filler, False)), num_ctx=CTX, num_predict=ANSWER)
    assert kept.status_code == 200, kept.text
    assert "truncated" not in kept.json()
    cut = ollama_chat(server, ollama_form(first(filler, True)), num_ctx=CTX, num_predict=ANSWER)
    assert cut.status_code == 200, cut.text  # (counted as its text, it would have reached the runner, too long)
    done = cut.json()
    assert done["eval_count"] > 0
    # the oldest turn, image and all, was dropped: what is left is the later turns
    assert done["truncated"] == whole - count(server, later)


def keys_create(server: Daemon, quota: int) -> str:
    env = {k: v for k, v in server.env.items() if k != "LOCALLLM_API_KEY"}
    made = subprocess.run(
        [*localllm_command(), "keys", "create", "--name", f"q{quota}", "--quota", str(quota)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_a_quota_reserves_the_image_positions(server: Daemon) -> None:
    messages: list[Any] = [{"role": "user", "content": [image_block(OTHER), {"type": "text", "text": TEXT}]}]
    prompt = count(server, messages)
    # a quota one token short of the prompt with its image: refused before anything is evaluated, naming the count
    short = keys_create(server, prompt - 1)
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude(server, short).messages.create(model=MODEL, max_tokens=8, messages=messages)
    assert f"this request's {prompt} prompt tokens" in str(refused.value)
    # three tokens more: the answer is cut where the quota ends, the image counted in the prompt
    small = keys_create(server, prompt + 3)
    made = claude(server, small).messages.create(model=MODEL, max_tokens=12, messages=messages)
    assert made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0) == prompt
    assert 0 < made.usage.output_tokens <= 3
    assert made.stop_reason == "max_tokens"
