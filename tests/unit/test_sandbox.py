"""The chat-template sandbox's counted bounds (in-process: no worker, no daemon)."""

from __future__ import annotations

import time

import pytest

from localllm.chat import sandbox
from localllm.domain import limits

HOSTILE = {
    "nested loops writing": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "a huge string": "{{ 'x' * 300000000 }}",
    "empty nested loops": "{% for i in range(100000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "a huge integer": "{{ 9 ** 999999 }}",
    "a huge list": "{{ ('a',) * 100000000 }}",
    "loops over messages": "{% for a in messages %}{% for b in messages %}{% for c in messages %}"
    "{% for d in messages %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}


def render(template: str, *, n_messages: int = 1, max_bytes: int = 64 << 10) -> dict[str, object]:
    messages = [{"role": "user", "content": "hi"}] * n_messages
    return sandbox.outcome(
        {"op": "render", "template": template, "variables": {"messages": messages}, "max_bytes": max_bytes}
    )


@pytest.mark.parametrize("template", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_templates_stop_at_a_bound_quickly(template: str) -> None:
    start = time.perf_counter()
    reply = render(template, n_messages=100)
    assert reply["error"] in ("bound", "output"), reply
    assert time.perf_counter() - start < 2.0  # the counters stop it long before the worker's time bound


def test_each_bound_is_named() -> None:
    assert "steps" in str(render(HOSTILE["empty nested loops"])["message"])
    assert render("{% for i in range(20000) %}0123456789{% endfor %}")["error"] == "output"
    assert "64 KiB" in str(render("{% for i in range(20000) %}0123456789{% endfor %}")["message"])
    assert "bits" in str(render(HOSTILE["a huge integer"])["message"])
    assert f"{limits.TEMPLATE_STEPS}" in str(render(HOSTILE["loops over messages"], n_messages=100)["message"])


def test_a_normal_template_renders_and_is_compiled_once() -> None:
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{{ range(3)|list|length }}"
    assert render(template, n_messages=2) == {"text": "<|user|>hi\n<|user|>hi\n3"}
    sandbox.compiled.cache_clear()
    render(template)
    render(template)
    assert sandbox.compiled.cache_info().hits >= 1


def test_template_errors_are_replies_not_exceptions() -> None:
    assert render("{{ raise_exception('no system role') }}") == {"error": "refused", "message": "no system role"}
    assert render("{% for %}")["error"] == "syntax"
    assert render("{{ 1 + 'a' }}")["error"] == "failed"
    assert render("{{ messages.__class__.__mro__ }}")["error"] in ("failed", "syntax")  # the sandbox still holds
    assert render("{{ 'x' * (" + "1" * 10 + ") }}")["error"] == "bound"


def test_an_oversized_template_is_refused_before_it_is_parsed() -> None:
    big = "{# " + "x" * limits.TEMPLATE_MAX_BYTES + " #}"
    reply = sandbox.outcome({"op": "check", "template": big})
    assert reply["error"] == "bound" and "more than 256 KiB" in str(reply["message"])
