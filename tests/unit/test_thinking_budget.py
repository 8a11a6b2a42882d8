"""The thinking budget (`thinking.budgeted`) over a scripted model, and reasoning efforts (`thinking.effort`) as the
OpenAI and Responses dialects read them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from localllm.chat.thinking import CLOSE, EFFORTS, budgeted, effort, prefilled, split_thinking
from localllm.domain.errors import InvalidRequest
from localllm.domain.events import Done, Event, Token
from localllm.server.dialects.responses.requests import to_turn
from localllm.service.generation import Answer, collect
from localllm.service.responses_store import ResponseStore

PROMPT = "<|im_start|>assistant\n<think>\n"


class Scripted:
    """A model that writes `thought` after the prompt, and `answer` once the prompt has closed the thinking; it
    keeps to `num_predict` and `stop` as the runner does, and records each generation it is asked for."""

    def __init__(self, thought: Sequence[str], answer: Sequence[str] = ("Once", " upon", " a", " time", ".")) -> None:
        self.thought, self.answer = list(thought), list(answer)
        self.calls: list[tuple[str, int, tuple[str, ...]]] = []

    async def run(self, prompt: str, num_predict: int, stop: tuple[str, ...]) -> AsyncGenerator[Token | Done, None]:
        self.calls.append((prompt, num_predict, stop))
        script = self.answer if CLOSE in prompt else self.thought
        done = Done("stop", prompt_eval_count=len(prompt.split()), cached_tokens=100 * len(self.calls))
        text, made = "", 0
        for piece in script:
            if made == num_predict:
                yield Done("length", done.prompt_eval_count, eval_count=made, cached_tokens=done.cached_tokens)
                return
            made += 1
            hit = next((s for s in stop if s in text + piece), None)
            if hit is not None:
                tail = (text + piece)[: (text + piece).index(hit)][len(text) :]
                if tail:
                    yield Token(tail)
                yield Done("stop", done.prompt_eval_count, eval_count=made, stop_sequence=hit)
                return
            text += piece
            yield Token(piece)
        yield Done("stop", done.prompt_eval_count, eval_count=made, cached_tokens=done.cached_tokens)


def answer_of(model: Scripted, budget: int, *, num_predict: int = -1, stop: tuple[str, ...] = ()) -> Answer:
    events: AsyncGenerator[Event, None] = budgeted(model.run, PROMPT, budget, num_predict=num_predict, stop=stop)
    return asyncio.run(collect(split_thinking(events, opened=True)))


THOUGHT = [f"t{i} " for i in range(1, 30)]  # a model that never closes its thinking


def test_thinking_is_cut_at_the_budget_and_the_answer_follows() -> None:
    model = Scripted(THOUGHT)
    answer = answer_of(model, 5)
    assert answer.thinking == "t1 t2 t3 t4 t5"
    assert answer.text == "Once upon a time."
    (first, budget, stop), (second, rest, stop2) = model.calls
    assert (first, budget, stop) == (PROMPT, 5, (CLOSE,))
    assert second == PROMPT + "t1 t2 t3 t4 t5 \n</think>\n\n" and (rest, stop2) == (-1, ())
    assert answer.done.eval_count == 5 + 5, "the output counts both parts"
    assert answer.done.prompt_eval_count == len(PROMPT.split()) and answer.done.cached_tokens == 100
    assert answer.done.reason == "stop"


def test_thinking_that_ends_within_the_budget_is_closed_as_the_model_closed_it() -> None:
    model = Scripted(["a ", "b\n", "</think>", "\n\n", "never written"])
    answer = answer_of(model, 10, num_predict=20)
    assert (answer.thinking, answer.text) == ("a b", "Once upon a time.")
    assert model.calls[1][0] == PROMPT + "a b\n</think>\n\n"
    assert model.calls[1][1] == 20 - 3, "max tokens bound both parts: three were spent thinking"


def test_max_tokens_bound_thinking_and_answer_together() -> None:
    model = Scripted(THOUGHT)
    answer = answer_of(model, 5, num_predict=7)
    assert answer.thinking == "t1 t2 t3 t4 t5" and answer.text == "Once upon"
    assert model.calls[1][1] == 2 and answer.done.eval_count == 7 and answer.done.reason == "length"
    short = Scripted(THOUGHT)
    cut = answer_of(short, 10, num_predict=4)  # max tokens below the budget: thinking is all there is
    assert len(short.calls) == 1 and short.calls[0][1] == 4
    assert (cut.thinking.rstrip(), cut.text, cut.done.reason, cut.done.stop_sequence) == (
        "t1 t2 t3 t4",
        "",
        "length",
        None,
    )
    exact = Scripted(["a ", "</think>", "x"])  # thinking closed with the last token there may be
    closed = answer_of(exact, 5, num_predict=2)
    assert len(exact.calls) == 1 and closed.done.reason == "length" and closed.done.stop_sequence is None


def test_an_end_or_a_stop_sequence_inside_the_thinking_ends_the_generation() -> None:
    ended = Scripted(["a ", "b "])
    answer = answer_of(ended, 10)
    assert len(ended.calls) == 1 and answer.thinking == "a b " and answer.text == "" and answer.done.reason == "stop"
    stopped = Scripted(THOUGHT)
    answer = answer_of(stopped, 10, stop=("t3",))
    assert len(stopped.calls) == 1 and answer.done.stop_sequence == "t3" and answer.thinking == "t1 t2 "
    assert stopped.calls[0][2] == ("t3", CLOSE)


def test_a_budget_of_zero_closes_the_thinking_at_once() -> None:
    model = Scripted(THOUGHT)
    answer = answer_of(model, 0)
    assert len(model.calls) == 1 and model.calls[0][0] == PROMPT + "\n</think>\n\n"
    assert (answer.thinking, answer.text) == ("", "Once upon a time.")


def test_the_prompt_opens_the_thinking_once() -> None:
    assert prefilled("<|im_start|>assistant\n") == "<|im_start|>assistant\n<think>\n"
    assert prefilled(PROMPT) == PROMPT, "a template that opened <think> itself (DeepSeek-R1's)"


# -- reasoning efforts ----------------------------------------------------------------------------------------


def test_efforts_that_ask_for_no_reasoning_turn_thinking_off() -> None:
    assert effort(None, "reasoning_effort") is None
    assert effort("none", "x") is False and effort("minimal", "x") is False
    assert [effort(e, "x") for e in ("low", "medium", "high", "xhigh")] == ["low", "medium", "high", "high"]
    for bad in ("max", 3, True):
        with pytest.raises(InvalidRequest) as info:
            effort(bad, "reasoning.effort")
        assert info.value.field == "reasoning.effort" and "none, minimal, low" in str(info.value)


def responses_turn(**extra: Any) -> Any:
    return to_turn({"model": "m", "input": "hi", **extra}, ResponseStore())


def test_responses_reasoning_effort_maps_as_openai_chat_does() -> None:
    from localllm.server.dialects.openai.requests import to_chat_request

    for name, think in EFFORTS.items():
        turn = responses_turn(reasoning={"effort": name, "summary": "auto"})
        assert (turn.chat.think, turn.chat.think_field) == (think, "reasoning.effort")
        assert turn.echo["reasoning"] == {"effort": name, "summary": "auto"}
        chat = to_chat_request(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": name}
        )
        assert chat[0].think == think
    assert responses_turn().chat.think is None
    for reasoning, field in (({"effort": "max"}, "reasoning.effort"), ({"summary": "long"}, "reasoning.summary")):
        with pytest.raises(InvalidRequest) as info:
            responses_turn(reasoning=reasoning)
        assert info.value.field == field


def test_openai_chat_takes_llama_servers_and_vllms_budget_fields() -> None:
    from localllm.server.dialects.openai.requests import to_chat_request

    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for name in ("reasoning_budget_tokens", "thinking_budget_tokens", "thinking_token_budget"):
        assert to_chat_request({**body, name: 8})[0].think_budget == 8
        assert to_chat_request({**body, name: 0})[0].think_budget == 0
        assert to_chat_request({**body, name: -1})[0].think_budget is None, "-1: no budget, as llama-server"
        with pytest.raises(InvalidRequest) as info:
            to_chat_request({**body, name: -2})
        assert info.value.field == name
    assert to_chat_request(body)[0].think_budget is None
