"""A scripted model, for tests only: with `LOCALLLM_TEST_SCRIPTED_OUTPUT=path` in the runner's environment, a
generation does not sample the model but answers with text a test wrote in that file, in the model's own
syntax (a tool call in Hermes/Qwen `<tool_call>{...}</tool_call>` form, then the answer). Everything above the
runner still runs for real: the daemon's templates, its tool-call parsing, every dialect and its streaming.

The file (read at every generation, so a test may rewrite it between agents) is JSON:
`{"rules": [{"when": ["text", ...], "output": "..."}, ...]}`: the first rule whose `when` strings all occur in
the rendered prompt gives the output (a rule without `when` always matches); when none does, the model is
sampled as usual. tests/agents/ drives coding agents with it. Never set it in production.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "LOCALLLM_TEST_SCRIPTED_OUTPUT"
PIECE = 8  # characters per streamed piece, so clients see a stream of several deltas
PAUSE = 0.01  # seconds between pieces


class Script:
    def __init__(self, path: Path) -> None:
        self.path = path

    def output_for(self, prompt: str) -> str | None:
        try:
            rules = json.loads(self.path.read_text())["rules"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        for rule in rules:
            when = rule.get("when") or []
            if all(str(w) in prompt for w in when):
                return str(rule.get("output", ""))
        return None


def from_environment() -> Script | None:
    path = os.environ.get(ENV)
    return Script(Path(path)) if path else None


def pieces(text: str) -> Iterator[str]:
    """The text in pieces, a moment apart (as a model writes it: sent at once, the daemon would read them
    as one piece, and a test could not see a stream of deltas)."""
    for i in range(0, len(text), PIECE):
        if i:
            time.sleep(PAUSE)
        yield text[i : i + PIECE]
