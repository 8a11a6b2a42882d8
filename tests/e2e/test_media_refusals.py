"""Images sent to a model that cannot read them (issue 25): stories260K (no projector, so no `vision`) behind a
real daemon, through the real SDKs (ollama, openai, anthropic): each dialect answers a 400 in its own error
shape naming the part and the model's capabilities, before anything loads; the bounds and the URL policy
likewise; and the daemon goes on answering text. (The images a vision model reads are tested on the tiny
vision model with the runner.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from ..conftest import CHAT_REPO
from ..hubstub import HubStub
from ..media import data_url, png
from .conftest import Daemon, daemon_with

CHAT = f"hf.co/{CHAT_REPO}"
PNG = png()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("media"), hub, (CHAT_REPO,)) as d:
        yield d


def no_vision(message: str) -> None:
    assert '"vision"' in message and "completion" in message, message


def test_ollama_chat_and_generate_refuse_images_naming_the_field(server: Daemon) -> None:
    client = ollama.Client(host=server.url)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model=CHAT, messages=[{"role": "user", "content": "what is it?", "images": [PNG]}])
    assert info.value.status_code == 400 and "messages[0].images[0]" in info.value.error
    no_vision(info.value.error)
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model=CHAT, prompt="what is it?", images=[PNG])
    assert info.value.status_code == 400 and info.value.error.startswith("images[0]:")
    no_vision(info.value.error)
    assert not server.runner_pids(), "refused before the model was loaded"


def test_openai_chat_refuses_an_image_part_naming_it(server: Daemon) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    content: Any = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": data_url(PNG)}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": content}])
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "messages[0].content[1]", error
    no_vision(error["message"])


def test_openai_responses_refuse_an_input_image_naming_it(server: Daemon) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    content: Any = [{"type": "input_image", "image_url": data_url(PNG)}, {"type": "input_text", "text": "what?"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=CHAT, input=[{"role": "user", "content": content}])
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "input[0].content[0]", error
    no_vision(error["message"])


def test_anthropic_refuses_an_image_block_naming_it(server: Daemon) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    image["source"]["data"] = base64.b64encode(PNG).decode()
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model=CHAT, max_tokens=8, messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]
        )
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages[0].content[0]:")
    no_vision(body["error"]["message"])


def test_what_the_parts_cannot_be_is_refused_first_and_text_still_answers(server: Daemon) -> None:
    """A payload that is no base64 and text holding the marker are refused as they are read; an image the model
    cannot read (by URL or a bomb) is refused for the capability before it is fetched or looked at."""
    chat = server.url + "/v1/chat/completions"

    def refused(content: Any) -> dict[str, Any]:
        r = httpx.post(chat, json={"model": CHAT, "messages": [{"role": "user", "content": content}]}, timeout=60)
        assert r.status_code == 400, r.text
        error: dict[str, Any] = r.json()["error"]
        return error

    cut = refused([{"type": "image_url", "image_url": {"url": data_url(PNG)[:-2]}}])
    assert cut["param"] == "messages[0].content[0]" and "base64" in cut["message"]
    marker = refused("look: <__media__>")
    assert marker["param"] == "messages[0].content" and "<__media__>" in marker["message"]
    url = refused([{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}])
    assert url["param"] == "messages[0].content[0]"
    no_vision(url["message"])
    generate = server.url + "/api/generate"
    bomb = base64.b64encode(png(1, 1, declared=(50_000, 50_000))).decode()
    r = httpx.post(generate, json={"model": CHAT, "prompt": "x", "images": [bomb], "stream": False}, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("images[0]:"), r.text
    no_vision(r.json()["error"])
    r = httpx.post(chat, json={"model": CHAT, "messages": [{"role": "user", "content": "Once"}], "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
