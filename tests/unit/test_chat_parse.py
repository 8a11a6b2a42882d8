"""Model output parsed per format family as llama.cpp parses it: llama.cpp's own cases and ours.

The cases are data (tests/data/chat_parse/, see its README); `chat_parse_cases` runs one. At least 97% of
llama.cpp's must give its message exactly; the ones that do not are listed, with the reason, in
docs/templates.md, and the list must be exactly the failing ones (so it cannot rot).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from localllm.chat import formats, templatecaps
from localllm.domain.messages import Tool

from .chat_parse_cases import CASES, OURS, TOOLS, case_id, matches, parse, template

DOCS = Path(__file__).parent.parent.parent / "docs" / "templates.md"


def documented_exceptions() -> set[str]:
    """The `template:line` ids in docs/templates.md's table of llama.cpp cases we do not match."""
    text = DOCS.read_text()
    section = text.split("### llama.cpp cases parsed differently", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+:\d+)` \|", section, re.M))


def test_llama_cpp_cases_give_llama_cpp_messages() -> None:
    failing = {case_id(c) for c in CASES["cases"] if not matches(c, parse(c))}
    passed = 1 - len(failing) / len(CASES["cases"])
    assert passed >= 0.97, f"{passed:.1%} of llama.cpp's cases parse as llama.cpp does"
    assert failing == documented_exceptions()


@pytest.mark.parametrize("case", OURS["cases"], ids=lambda c: f"{c['template']}:{c['line']}")
def test_our_cases(case: dict[str, Any]) -> None:
    got = parse(case)
    assert matches(case, got), (got, case["expect"])


def test_every_ported_template_has_its_family() -> None:
    """No template of llama.cpp's cases falls back to the generic parser."""
    generic = {c["template"] for c in CASES["cases"] if formats.detect(template(c["template"])) is formats.GENERIC}
    assert generic <= {"google-gemma-2-2b-it.jinja"}  # Gemma 2 has neither reasoning nor calls


def test_a_malformed_call_is_the_answer_never_an_error() -> None:
    family = formats.detect(template("Qwen3-Coder.jinja"))
    tools = [Tool("f", "", {"type": "object", "properties": {"a": {"type": "integer"}}})]
    for text in (
        "<tool_call>\n<function=f>\n<parameter=a>\n1",
        "<tool_call><function=g></function></tool_call>",
        "<tool_call>",
    ):
        got = formats.parse(family, text, tools)
        assert got.calls == [] and got.content == text


def test_a_partial_call_is_held_out_of_the_answer() -> None:
    family = formats.detect(template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    tools = [Tool("get_time", "", {"type": "object"})]
    got = formats.parse(family, 'Checking.<tool_call>\n{"name": "get_time", "argu', tools, partial=True)
    assert got.content == "Checking." and [c.name for c in got.calls] == ["get_time"]


def test_mangled_outputs_never_raise() -> None:
    """llama.cpp's outputs cut, spliced and stuffed with brackets (deeper than Python's recursion limit), read
    by every family, whole and partial: always a message, never an exception."""
    rng = random.Random(7)
    tools = [Tool(n, "", TOOLS[n]) for n in TOOLS]
    families = list(
        {
            formats.detect(template(c["template"])).name: formats.detect(template(c["template"]))
            for c in CASES["cases"]
        }.values()
    )
    outputs = [c["output"] for c in CASES["cases"]]
    stuffing = ["{", "[", "<", "]", "}", '"', "\\", "\n", "<|", "|>", "[" * 3000, "{" * 3000, "(" * 500]
    for _ in range(1500):
        text = rng.choice(outputs)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            cut = rng.random()
            if cut < 0.3:
                text = text[:at] + text[at + rng.randint(1, 5) :]
            elif cut < 0.6:
                text = text[:at] + rng.choice(outputs)[: rng.randint(0, 40)] + text[at:]
            elif cut < 0.8:
                text = text[:at] + rng.choice(stuffing) + text[at:]
            else:
                text = text[:at]
        family = rng.choice(families)
        for partial in (False, True):
            got = formats.parse(family, text, tools, prefix=rng.choice([None, "<think>\n"]), partial=partial)
            assert isinstance(got.content, str) and isinstance(got.reasoning, str)


def test_families_with_their_own_reasoning_markers_can_think() -> None:
    """Ministral's `[THINK]` and gpt-oss's `analysis` channel make a reasoning model (`thinking` in /api/show,
    `think` accepted), though their templates say neither `enable_thinking` nor `<think>`."""
    assert templatecaps.thinking(template("mistralai-Ministral-3-14B-Reasoning-2512.jinja"))
    assert templatecaps.thinking(template("openai-gpt-oss-120b.jinja"))
    assert not templatecaps.thinking(template("Mistral-Small-3.2-24B-Instruct-2506.jinja"))
    assert not templatecaps.thinking(template("google-gemma-2-2b-it.jinja"))


def test_every_family_is_documented() -> None:
    listed = set(re.findall(r"^\| ([a-z0-9.\-]+) \|", DOCS.read_text(), re.M))
    assert {f.name for _, f in formats.FAMILIES} | {formats.GENERIC.name} <= listed
