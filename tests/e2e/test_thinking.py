"""Reasoning models through the real daemon and the official `ollama`, `openai` and `anthropic` packages: `think`,
the `thinking` capability, thinking text apart from the answer (streamed and not), reasoning efforts, and the
thinking budget (Anthropic's `budget_tokens`, llama-server's and vLLM's budget fields).

The models are stories260K with reasoning models' real chat templates (tests/data/thinking): Qwen3's, which
switches thinking with `enable_thinking`, and DeepSeek-R1-Distill's, which opens `<think>` in the prompt.
stories260K never writes `<think>` of its own accord, so where both parts are wanted its output is forced by
a GBNF grammar (OpenAI's `grammar` extra, which the runner takes as llama.cpp does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from localllm.domain.messages import ChatMessage

from ..conftest import STORIES_REPO
from ..fakes import render_chat
from .conftest import Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

DATA = Path(__file__).parent.parent / "data" / "thinking"
QWEN3 = (DATA / "Qwen-Qwen3-0.6B.jinja").read_text()
R1 = (DATA / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text()
STORIES = f"hf.co/{STORIES_REPO}"
# The model's answer, forced: a thought that begins with fixed words, then an answer that begins with "Once".
GRAMMAR = r'root ::= "<think>\nlet me see" [a-z ]{1,12} "\n</think>\n\n" "Once" [a-z ]{1,12}'
USER: list[Any] = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def d(daemon: Daemon) -> Iterator[Daemon]:
    pulled = daemon.cli("pull", STORIES)
    assert pulled.returncode == 0, pulled.stderr
    client = ollama.Client(host=daemon.url)
    for name, template in (("qwen3ish", QWEN3), ("r1ish", R1)):
        client.create(model=name, from_=STORIES, template=template, parameters={"temperature": 0, "num_predict": 16})
    yield daemon


@pytest.fixture
def oc(d: Daemon) -> ollama.Client:
    return ollama.Client(host=d.url)


@pytest.fixture
def ai(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def an(d: Daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=d.url, api_key="unused", max_retries=0)


def test_show_lists_thinking_for_thinking_templates_only(oc: ollama.Client) -> None:
    assert "thinking" in (oc.show("qwen3ish").capabilities or [])
    assert "thinking" in (oc.show("r1ish").capabilities or [])
    assert "thinking" not in (oc.show(STORIES).capabilities or [])


def test_think_on_a_model_that_cannot_think_is_a_400(oc: ollama.Client, ai: openai.OpenAI) -> None:
    for call in (
        lambda: oc.chat(model=STORIES, messages=USER, think=True),
        lambda: oc.generate(model=STORIES, prompt="x", think=True),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 400 and err.value.error == f'"{STORIES}:latest" does not support thinking'
    with pytest.raises(openai.BadRequestError) as bad:
        ai.chat.completions.create(model=STORIES, messages=USER, reasoning_effort="low")
    assert "does not support thinking" in bad.value.message
    # think false asks nothing of the model: fine anywhere
    assert oc.chat(model=STORIES, messages=USER, think=False, options={"num_predict": 4}).message.content


def test_a_bad_think_value_names_the_field(d: Daemon) -> None:
    r = httpx.post(d.url + "/api/chat", json={"model": "qwen3ish", "messages": USER, "think": "very"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"].startswith('invalid think value: "very"')
    body = {"model": "qwen3ish", "messages": USER, "reasoning_effort": 3}
    r = httpx.post(d.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"


def test_think_false_renders_thinking_off_as_the_template_says(oc: ollama.Client, ai: openai.OpenAI) -> None:
    messages = [ChatMessage("user", USER[0]["content"])]
    on = render_chat(messages, template=QWEN3, think=True)
    off = render_chat(messages, template=QWEN3, think=False)
    assert off == on + "<think>\n\n</think>\n\n"
    # The daemon renders the same: the prompt with thinking off is longer by the closed think block.
    tokens = {
        effort: ai.chat.completions.create(
            model="qwen3ish",
            messages=USER,
            reasoning_effort=effort,
            max_tokens=2,
        ).usage.prompt_tokens  # type: ignore[union-attr]
        for effort in ("none", "high")
    }
    assert tokens["none"] > tokens["high"]
    # stories260K writes no <think>: with thinking on or off, all of its output is the answer
    for think in (True, False):
        reply = oc.chat(model="qwen3ish", messages=USER, think=think)
        assert reply.message.content and not reply.message.thinking
    assert oc.generate(model="qwen3ish", prompt="Hi", think=False).response


def test_a_prompt_opened_think_makes_the_output_thinking(oc: ollama.Client) -> None:
    """R1's template opens <think> in the prompt: all the tiny model writes (it never closes it) is thinking."""
    whole = oc.chat(model="r1ish", messages=USER, think=True)
    assert whole.message.thinking and whole.message.content == ""
    pieces = list(oc.chat(model="r1ish", messages=USER, think=True, stream=True))
    thoughts = [p.message.thinking for p in pieces if p.message.thinking]
    assert len(thoughts) > 1 and "".join(thoughts) == whole.message.thinking  # streamed as it comes
    assert not any(p.message.content for p in pieces)
    # without `think`, a thinking model's reasoning is still split off; R1's template cannot turn thinking
    # off, so with think false too its output (inside the <think> it opened) is not passed off as the answer
    for think in (None, False):
        reply = oc.chat(model="r1ish", messages=USER, think=think)
        assert reply.message.thinking == whole.message.thinking and reply.message.content == ""
    generated = oc.generate(model="r1ish", prompt="Tell me a story.", think=True)
    assert generated.thinking and generated.response == ""
    streamed = list(oc.generate(model="r1ish", prompt="Tell me a story.", think=True, stream=True))
    assert "".join(p.thinking or "" for p in streamed) == generated.thinking


def test_reasoning_content_apart_from_content_in_openai_chat(ai: openai.OpenAI) -> None:
    kwargs = {"model": "qwen3ish", "messages": USER, "max_tokens": 80, "temperature": 0}
    whole = ai.chat.completions.create(**kwargs, extra_body={"grammar": GRAMMAR})  # type: ignore[call-overload]
    message = whole.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning.startswith("let me see") and "think>" not in reasoning
    assert message.content.startswith("Once") and "think>" not in message.content
    stream = ai.chat.completions.create(**kwargs, extra_body={"grammar": GRAMMAR}, stream=True)  # type: ignore[call-overload]
    deltas = [c.choices[0].delta for c in stream if c.choices]
    thought = [x.model_extra.get("reasoning_content") for x in deltas if x.model_extra.get("reasoning_content")]
    said = [x.content for x in deltas if x.content]
    assert len(thought) > 1 and len(said) > 1  # each streamed as it comes
    assert "".join(thought) == reasoning and "".join(said) == message.content
    assert not any(x.content and x.model_extra.get("reasoning_content") for x in deltas)
    # an earlier answer's reasoning may be sent back (`reasoning_content`), as these clients do
    turn = {"role": "assistant", "content": message.content, "reasoning_content": reasoning}
    again = ai.chat.completions.create(model="qwen3ish", messages=[*USER, turn, *USER], max_tokens=4)  # type: ignore[list-item]
    assert again.choices[0].message.content is not None


# -- reasoning efforts: OpenAI chat's `reasoning_effort` and Responses' `reasoning.effort`, mapped alike ---------


def test_an_effort_that_asks_for_reasoning_is_a_400_naming_the_field_on_a_model_that_cannot_think(
    ai: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        ai.responses.create(model=STORIES, input="Tell me a story.", reasoning={"effort": "low"})
    assert bad.value.status_code == 400 and "does not support thinking" in bad.value.message
    assert bad.value.body["param"] == "reasoning.effort"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        ai.chat.completions.create(model=STORIES, messages=USER, reasoning_effort="high")
    assert bad.value.body["param"] == "reasoning_effort"  # type: ignore[index]
    none: Any = ("none", "minimal")
    for effort in none:  # they ask for no reasoning: fine on any model, on both APIs
        out = ai.responses.create(
            model=STORIES, input="Tell me a story.", reasoning={"effort": effort}, max_output_tokens=4
        )
        assert out.status in ("completed", "incomplete") and out.output_text
        said = ai.chat.completions.create(model=STORIES, messages=USER, reasoning_effort=effort, max_tokens=4)
        assert said.choices[0].message.content


def test_responses_effort_renders_thinking_as_chat_does(ai: openai.OpenAI) -> None:
    """`none` renders Qwen3's template with thinking off (a closed think block: more input tokens), "high" on."""
    counted = {}
    efforts: Any = ("none", "high")
    for effort in efforts:
        out = ai.responses.create(
            model="qwen3ish", input="Tell me a story.", reasoning={"effort": effort}, max_output_tokens=2
        )
        chat = ai.chat.completions.create(model="qwen3ish", messages=USER, reasoning_effort=effort, max_tokens=2)
        assert out.usage is not None and chat.usage is not None
        assert out.usage.input_tokens == chat.usage.prompt_tokens
        assert out.reasoning is not None and out.reasoning.effort == effort
        counted[effort] = out.usage.input_tokens
    assert counted["none"] > counted["high"]


# -- the thinking budget ---------------------------------------------------------------------------------------

GREEDY = {"temperature": 0}


def thought_of(oc: ollama.Client, n: int) -> str:
    """What the model thinks in its first `n` tokens: a raw generation from the prompt a budgeted chat sends
    (Qwen3's template with thinking on, then `<think>` opened: all that follows is thinking)."""
    text = render_chat([ChatMessage("user", USER[0]["content"])], template=QWEN3, think=True) + "<think>\n"
    out = oc.generate(model="qwen3ish", prompt=text, raw=True, options={"num_predict": n, "temperature": 0})
    assert not out.response
    return str(out.thinking)


def test_anthropic_budget_tokens_cut_the_thinking_and_the_answer_follows(
    an: anthropic.Anthropic, oc: ollama.Client
) -> None:
    """stories260K never closes its thinking: with a budget it is closed after `budget_tokens`, and the answer
    takes the rest of `max_tokens`."""
    thinking: Any = {"type": "enabled", "budget_tokens": 6}
    out = an.messages.create(model="qwen3ish", max_tokens=30, messages=USER, thinking=thinking, extra_body=GREEDY)
    assert [b.type for b in out.content] == ["thinking", "text"]
    thought, text = out.content[0].thinking, out.content[1].text  # type: ignore[union-attr]
    assert thought == thought_of(oc, 6), "exactly the first 6 tokens the model thinks"
    assert text and "think>" not in text + thought
    assert out.usage.output_tokens == 30 and out.stop_reason == "max_tokens", "max_tokens bound both parts"
    # a larger budget: the thinking goes on where the short one was cut
    longer = an.messages.create(
        model="qwen3ish",
        max_tokens=30,
        messages=USER,
        thinking={"type": "enabled", "budget_tokens": 20},
        extra_body=GREEDY,
    )
    longer_thought = longer.content[0].thinking  # type: ignore[union-attr]
    assert longer_thought.startswith(thought) and len(longer_thought) > len(thought)
    # the input tokens are the prompt's (the thinking is not counted twice), as count_tokens says
    counted = an.messages.count_tokens(model="qwen3ish", messages=USER, thinking=thinking)
    assert out.usage.input_tokens + (out.usage.cache_read_input_tokens or 0) == counted.input_tokens
    # streamed: a thinking block, then a text block, with the same text
    with an.messages.stream(
        model="qwen3ish", max_tokens=30, messages=USER, thinking=thinking, extra_body=GREEDY
    ) as stream:
        kinds = [e.content_block.type for e in stream if e.type == "content_block_start"]
        final = stream.get_final_message()
    assert kinds == ["thinking", "text"]
    assert final.content[0].thinking == thought and final.content[1].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 30


def test_the_same_budget_through_llama_servers_and_vllms_fields(ai: openai.OpenAI, an: anthropic.Anthropic) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 5}
    out = an.messages.create(model="qwen3ish", max_tokens=20, messages=USER, thinking=thinking, extra_body=GREEDY)
    for name in ("thinking_budget_tokens", "reasoning_budget_tokens", "thinking_token_budget"):
        chat = ai.chat.completions.create(
            model="qwen3ish", messages=USER, max_tokens=20, temperature=0, extra_body={name: 5}
        )
        message = chat.choices[0].message
        assert message.model_extra is not None and message.model_extra["reasoning_content"] == out.content[0].thinking  # type: ignore[union-attr]
        assert message.content == out.content[1].text  # type: ignore[union-attr]
        assert chat.usage is not None and chat.usage.completion_tokens == 20


def test_a_budget_on_a_model_that_cannot_think_changes_nothing(an: anthropic.Anthropic) -> None:
    plain = an.messages.create(model=STORIES, max_tokens=8, messages=USER, extra_body=GREEDY)
    thinking: Any = {"type": "enabled", "budget_tokens": 4}
    out = an.messages.create(model=STORIES, max_tokens=8, messages=USER, thinking=thinking, extra_body=GREEDY)
    assert [b.type for b in out.content] == ["text"] and out.content == plain.content


def test_a_budget_not_below_max_tokens_is_refused_as_anthropic_does(an: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        an.messages.create(
            model="qwen3ish", max_tokens=8, messages=USER, thinking={"type": "enabled", "budget_tokens": 8}
        )
    assert bad.value.status_code == 400 and "thinking.budget_tokens" in bad.value.message
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
