"""The scripted model (localllm/runner/scripted.py, test-only): the first rule whose strings all occur in the prompt
answers; none matching, or no readable file, leaves the model to sample."""

from __future__ import annotations

import json
from pathlib import Path

from localllm.runner import scripted


def test_first_matching_rule_answers(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    rules = [{"when": ["<tool_response>", "PAPAYA"], "output": "the word"}, {"when": ["hello"], "output": "call"}]
    path.write_text(json.dumps({"rules": rules}))
    script = scripted.Script(path)
    assert script.output_for("hello <tool_response>PAPAYA") == "the word"
    assert script.output_for("hello <tool_response>") == "call"
    assert script.output_for("bye") is None


def test_unreadable_script_samples_the_model(tmp_path: Path) -> None:
    assert scripted.Script(tmp_path / "missing.json").output_for("x") is None
    (tmp_path / "bad.json").write_text("{")
    assert scripted.Script(tmp_path / "bad.json").output_for("x") is None


def test_output_streams_in_pieces() -> None:
    text = "<tool_call>\n{}\n</tool_call>"
    assert len(scripted.pieces(text)) > 1
    assert "".join(scripted.pieces(text)) == text
