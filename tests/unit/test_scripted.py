"""The scripted model (localllm/runner/scripted.py, test-only): the first rule whose strings all occur in the prompt
answers; none matching, or no readable file, leaves the model to sample."""

from __future__ import annotations

import json
from pathlib import Path

from localllm.runner import scripted
from localllm.runner.batch import Batcher
from localllm.runner.protocol import Job

from .test_batch import ScriptEngine, ScriptSampler, done_of, recorder, run, text_of


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
    assert len(list(scripted.pieces(text))) > 1
    assert "".join(scripted.pieces(text)) == text


def test_a_scripted_generation_answers_in_pieces_without_decoding(tmp_path: Path) -> None:
    """The decode loop answers a prompt a rule matches with the rule's text, streamed in pieces, and the prompt's
    token count; no decode runs. A prompt no rule matches is sampled as usual."""
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"rules": [{"when": ["note"], "output": "<tool_call>\n{}\n</tool_call>"}]}))
    engine = ScriptEngine("sampled")
    sent: list[dict[str, object]] = []
    batcher = Batcher(engine, recorder(sent), lambda p: ScriptSampler("sampled"), script=scripted.Script(path))
    batcher.handle("a", Job(prompt="read the note"))
    assert text_of(sent, "a") == "<tool_call>\n{}\n</tool_call>"
    assert sum(1 for m in sent if m.get("id") == "a" and m["ev"] == "text") > 1
    assert done_of(sent, "a")["reason"] == "stop"
    assert done_of(sent, "a")["prompt_eval_count"] == len("read the note")
    assert engine.decoded == []
    batcher.handle("b", Job(prompt="hello"))
    run(batcher)
    assert text_of(sent, "b") == "sampled"
