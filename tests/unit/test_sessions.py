"""Session bookkeeping (LMDeploy's interactive sessions) over a scripted service: what a turn sends, and when
sessions end. The end-to-end proof, with the real KV cache, is in tests/e2e/test_dialects.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any

import pytest

from localllm.domain.errors import InvalidRequest, ServerBusy
from localllm.domain.events import Done, Token
from localllm.domain.names import parse_name
from localllm.domain.options import Constraints, Options
from localllm.service.generation import GenerateRequest
from localllm.service.sessions import Sessions

from ..fakes import render_chat_async

NAME = parse_name("stories")


class ScriptedService:
    """Every turn answers "ok"; the context grows by the new text's words and one reply token."""

    def __init__(self, template: str | None = None) -> None:
        self.settings = SimpleNamespace(keep_alive=300.0)
        self.requests: list[GenerateRequest] = []
        self.loaded_digests = ["d1"]
        self.template = template
        self.templates = self  # the service's template renderer: `render` below

    def model(self, name: Any) -> Any:
        info = SimpleNamespace(bos_token="<s>", eos_token="</s>")
        return SimpleNamespace(
            template=self.template,
            system=None,
            info=info,
            stored=SimpleNamespace(manifest=SimpleNamespace(digest="d1")),
        )

    async def render(self, model: Any, messages: Any) -> str:
        return await render_chat_async(messages, template=model.template, bos_token="<s>", eos_token="</s>")

    def loaded(self) -> list[Any]:
        return [SimpleNamespace(digest=d) for d in self.loaded_digests]

    async def tokenize(self, name: Any, text: str, *, add_bos: bool = True) -> list[tuple[int, bytes]]:
        return [(1, b"")] * add_bos + [(7, w.encode()) for w in text.split()]

    async def generate(self, req: GenerateRequest) -> AsyncGenerator[Token | Done, None]:
        self.requests.append(req)
        context = (*req.constraints.context, *([1] * (not req.constraints.context)), *[7] * len(req.prompt.split()))
        yield Token("ok")
        await asyncio.sleep(0)
        yield Done("stop", prompt_eval_count=1, eval_count=1, context=(*context, 9))


def turn(sessions: Sessions, sid: int, text: str, *, start: bool = False, end: bool = False) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        info, events = await sessions.turn(
            sid, NAME, text, start=start, end=end, options=Options(), constraints=Constraints()
        )
        texts = [e.text async for e in events if isinstance(e, Token)]
        return {"text": "".join(texts), "input": info.input_tokens, "history": info.history_tokens}

    return asyncio.run(go())


def test_a_turn_sends_the_history_as_tokens_and_only_the_new_text() -> None:
    service = ScriptedService()
    sessions = Sessions(service)  # type: ignore[arg-type]
    assert turn(sessions, 1, "once upon a time") == {"text": "ok", "input": 5, "history": 0}
    assert turn(sessions, 1, "and then") == {"text": "ok", "input": 2, "history": 6}
    first, second = service.requests
    assert first.prompt == "once upon a time" and first.constraints.context == () and first.raw
    assert second.prompt == "and then" and second.constraints.context == (1, 7, 7, 7, 7, 9)


def test_with_a_chat_template_only_the_new_part_of_the_rendering_is_sent() -> None:
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}<assistant>"
    service = ScriptedService(template)
    sessions = Sessions(service)  # type: ignore[arg-type]
    turn(sessions, 1, "hi")
    turn(sessions, 1, "more")
    first, second = service.requests
    assert first.prompt == "<user>hi</user><assistant>"
    assert second.prompt == "</assistant><user>more</user><assistant>"


def test_sessions_end_on_request_expiry_unload_and_for_room() -> None:
    now = [0.0]
    service = ScriptedService()
    sessions = Sessions(service, limit=2, clock=lambda: now[0])  # type: ignore[arg-type]
    turn(sessions, 1, "a", end=True)
    assert sessions.get(1) is None, "ended after its last turn"
    turn(sessions, 1, "a")
    now[0] = 1.0
    turn(sessions, 2, "b")
    now[0] = 2.0
    turn(sessions, 3, "c")  # no room: session 1, the least recently used, goes
    assert sessions.get(1) is None and sessions.get(2) is not None
    now[0] = 2.0 + 301
    assert sessions.get(3) is None, "idle longer than the keep-alive"
    turn(sessions, 4, "d")
    service.loaded_digests = []
    assert sessions.get(4) is None, "its model was unloaded: its cache is gone"


def test_a_busy_session_refuses_a_second_turn_and_can_be_cancelled() -> None:
    sessions = Sessions(ScriptedService(), limit=1)  # type: ignore[arg-type]

    async def go() -> list[Any]:
        _, events = await sessions.turn(
            1, NAME, "a b", start=True, end=False, options=Options(), constraints=Constraints()
        )
        first = await events.__anext__()
        with pytest.raises(InvalidRequest, match="busy"):
            await sessions.turn(1, NAME, "c", start=False, end=False, options=Options(), constraints=Constraints())
        with pytest.raises(ServerBusy):
            await sessions.turn(2, NAME, "c", start=True, end=False, options=Options(), constraints=Constraints())
        assert sessions.cancel(1)
        return [first, *[e async for e in events]]

    events = asyncio.run(go())
    assert events[-1] == Done("cancel")
    session = sessions.get(1)
    assert session is not None and not session.busy and session.context == (), "the cancelled turn is not recorded"
