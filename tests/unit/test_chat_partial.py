"""Partial JSON arguments healed as llama.cpp does (`formats.partial`): what of them is certain."""

from __future__ import annotations

import json

import pytest

from localllm.chat.formats import partial


def certain(text: str) -> str | None:
    healed = partial.heal(text, 0)
    if healed is None:
        return None
    return partial.certain(json.dumps(json.loads(healed.text), ensure_ascii=False), healed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"ci', '{"ci'),  # a key being written
        ('{"city"', '{"city": '),  # a whole key: its colon is certain
        ('{"city":', '{"city": '),
        ('{"city": "Par', '{"city": "Par'),  # a string value being written
        ('{"city": "Paris"', '{"city": "Paris"'),
        ('{"city": "Paris",', '{"city": "Paris", '),
        ('{"days": 12', '{"days": '),  # a number may go on: it waits
        ('{"ok": tr', '{"ok": '),
        ('{"days": 12, "x"', '{"days": 12, "x": '),
        ('{"xs": [1, 2', '{"xs": [1, '),
        ('{"xs": [1, {"y": null}', '{"xs": [1, {"y": null}'),
        ('{"q": "a \\"b', '{"q": "a \\"b'),
        ('{"q": "é', '{"q": "é'),
    ],
)
def test_what_of_partial_json_is_certain_is_a_beginning_of_the_whole(text: str, expected: str) -> None:
    assert certain(text) == expected


@pytest.mark.parametrize("text", ['{"q": "a\\', '{"q": "\\u00', "no json", '{"a": 1}'])
def test_an_open_escape_or_no_open_json_decides_nothing(text: str) -> None:
    assert partial.heal(text, 0) is None
