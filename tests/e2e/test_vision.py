"""Images end to end (issue 25's acceptance): the tiny vision model made here (tests/mediamodels.py) is pulled
from the Hub stand-in with its projector, like any Hub repository with an `mmproj-*.gguf`, and one image with
the same text goes through Ollama's /api/chat and /api/generate (the `ollama` package), OpenAI chat (the
`openai` package, a data URL, streamed), Anthropic Messages (the `anthropic` package) and Responses (the
`openai` package), and `localllm run MODEL "… ./img.png"`. Each is evaluated (the prompt grows by the image's
tokens), greedy output is the same in every dialect, the same image again comes from the prompt cache, and a
different one does not."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from ..hubstub import HubStub
from ..media import data_url, png, wav
from ..mediamodels import AUDIO_TOKENS, IMAGE_TOKENS, VisionModel
from .conftest import Daemon, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

REPO = "testorg/tiny-vlm-GGUF"
PULLED = f"hf.co/{REPO}"
MODEL = "vlm-greedy"  # the pulled model with greedy sampling (the CLI has no sampling flags)
TEXT = "What is in this picture?"
IMAGE = png(24, 24, seed=1)
OTHER = png(24, 24, seed=2)
N = 12


@pytest.fixture(scope="module")
def stub(tiny_vlm: VisionModel) -> Iterator[HubStub]:
    files = {"tiny-vlm-F32.gguf": tiny_vlm.model, "mmproj-tiny-vlm-F32.gguf": tiny_vlm.projector}
    with HubStub({REPO: files}) as hub:
        yield hub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: HubStub) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("vision")
    d = start_daemon(tmp, stub, LOCALLLM_NUM_PARALLEL="1")
    try:
        pulled = d.cli("pull", PULLED)
        assert pulled.returncode == 0, pulled.stderr
        modelfile = tmp / "Modelfile"
        modelfile.write_text(f"FROM {PULLED}\nPARAMETER temperature 0\nPARAMETER num_predict {N}\n")
        created = d.cli("create", MODEL, "-f", str(modelfile))
        assert created.returncode == 0, created.stderr
        yield d
    finally:
        stop_daemon(d)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ollama_chat(server: Daemon, image: bytes | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": TEXT, **({"images": [b64(image)]} if image else {})}
    body = {"model": MODEL, "stream": False, "messages": [message], "options": {"temperature": 0, "num_predict": N}}
    reply = httpx.post(server.url + "/api/chat", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def prompt_tokens(server: Daemon, image: bytes | None) -> int:
    """The prompt's whole token count (OpenAI's usage counts cached tokens too)."""
    content: Any = [{"type": "text", "text": TEXT}]
    if image:
        content.insert(0, {"type": "image_url", "image_url": {"url": data_url(image)}})
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    count: int = reply.json()["usage"]["prompt_tokens"]
    return count


def test_the_pulled_model_reads_images(server: Daemon) -> None:
    shown = ollama.Client(host=server.url).show(MODEL)
    assert "vision" in (shown.capabilities or [])


def test_an_image_is_evaluated_and_the_same_answer_comes_from_every_dialect(server: Daemon, tmp_path: Path) -> None:
    first = ollama_chat(server, IMAGE)
    text_only = ollama_chat(server, None)
    # Evaluated: the image's prompt has its tokens more (the text around the marker may tokenize a token apart);
    # the text-only one found the template's head in the cache, so only the image's was all evaluated.
    grown = first["prompt_eval_count"] - prompt_tokens(server, None)
    assert IMAGE_TOKENS - 2 <= grown <= IMAGE_TOKENS + 2, (first, text_only)
    expected = first["message"]["content"]
    assert expected

    answers: dict[str, str] = {}
    client = ollama.Client(host=server.url)
    generated = client.generate(model=MODEL, prompt=TEXT, images=[IMAGE], options={"temperature": 0, "num_predict": N})
    answers["ollama generate"] = generated.response or ""

    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    content: Any = [{"type": "image_url", "image_url": {"url": data_url(IMAGE)}}, {"type": "text", "text": TEXT}]
    stream = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=N, stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces, "the answer streams"
    answers["openai chat"] = "".join(pieces)

    claude = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    image_block: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(IMAGE)}}
    message = claude.messages.create(
        model=MODEL,
        max_tokens=N,
        extra_body={"temperature": 0},  # (Anthropic's default is 1; this SDK has no argument for it)
        messages=[{"role": "user", "content": [image_block, {"type": "text", "text": TEXT}]}],
    )
    answers["anthropic"] = "".join(block.text for block in message.content if block.type == "text")

    parts: Any = [{"type": "input_image", "image_url": data_url(IMAGE)}, {"type": "input_text", "text": TEXT}]
    response = oai.responses.create(
        model=MODEL, input=[{"role": "user", "content": parts}], temperature=0, max_output_tokens=N
    )
    answers["responses"] = response.output_text

    picture = tmp_path / "img.png"
    picture.write_bytes(IMAGE)
    ran = server.cli("run", MODEL, f"{TEXT} {picture}")
    assert ran.returncode == 0, ran.stderr
    assert f"Added image '{picture}'" in ran.stderr
    answers["localllm run"] = ran.stdout.strip()

    assert {name: text.strip() for name, text in answers.items()} == dict.fromkeys(answers, expected.strip())


def test_the_same_image_again_is_cached_and_a_different_one_is_not(server: Daemon) -> None:
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

    def ask(image: bytes) -> openai.types.CompletionUsage:
        content: Any = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": TEXT}]
        done = oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=N
        )
        assert done.usage is not None
        return done.usage

    first = ask(IMAGE)
    again = ask(IMAGE)
    assert again.prompt_tokens == first.prompt_tokens
    cached = (again.prompt_tokens_details.cached_tokens if again.prompt_tokens_details else 0) or 0
    assert cached and cached > IMAGE_TOKENS, "the image's tokens came from the prompt cache"
    other = ask(OTHER)
    other_cached = (other.prompt_tokens_details.cached_tokens if other.prompt_tokens_details else 0) or 0
    assert other_cached < first.prompt_tokens - IMAGE_TOKENS, "a different image matches nothing past its start"


def test_the_answer_depends_on_the_image(server: Daemon) -> None:
    """The model sees the image: another image gives another greedy answer (the weights are random, but not the
    image's effect on them)."""
    answers = {ollama_chat(server, png(24, 24, seed=seed))["message"]["content"] for seed in range(3, 7)}
    assert len(answers) > 1, answers


def test_audio_through_openai_and_the_cli(server: Daemon, tiny_vlm_audio: VisionModel, tmp_path: Path) -> None:
    """A model made from a local GGUF and a projector that hears too (a Modelfile with two FROM lines): an OpenAI
    `input_audio` part and a WAV named to `localllm run` are evaluated as audio (mtmd pads a clip to 30 s)."""
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(
        f"FROM {tiny_vlm_audio.model}\nFROM {tiny_vlm_audio.projector}\nPARAMETER temperature 0\n"
        f"PARAMETER num_predict {N}\n"
    )
    created = server.cli("create", "vlm-audio", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    assert "audio" in (ollama.Client(host=server.url).show("vlm-audio").capabilities or [])
    clip = wav(1.0)
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    content: Any = [{"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}}]
    content.append({"type": "text", "text": TEXT})
    heard = oai.chat.completions.create(
        model="vlm-audio", messages=[{"role": "user", "content": content}], temperature=0, max_tokens=N
    )
    plain = oai.chat.completions.create(model="vlm-audio", messages=[{"role": "user", "content": TEXT}], max_tokens=1)
    assert heard.usage is not None and plain.usage is not None
    assert AUDIO_TOKENS - 2 <= heard.usage.prompt_tokens - plain.usage.prompt_tokens <= AUDIO_TOKENS + 2
    sound = tmp_path / "clip.wav"
    sound.write_bytes(clip)
    ran = server.cli("run", "vlm-audio", f"{TEXT} {sound}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == (heard.choices[0].message.content or "").strip()
