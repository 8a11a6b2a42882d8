"""The vLLM, LMDeploy, TGI and Triton dialects' pure translators and error shapes, the `POST /generate` dispatch,
and a session's slot in the decode loop (through a real daemon: tests/e2e/test_dialects.py)."""

from __future__ import annotations

import pytest

from localllm.domain.errors import EngineError, InvalidRequest, ServerBusy
from localllm.domain.events import Token, TokenLogprob
from localllm.runner.protocol import Job
from localllm.server.dialects import lmdeploy as lmdeploy_api
from localllm.server.dialects import triton as triton_api
from localllm.server.dialects import vllm as vllm_api
from localllm.server.dialects.compat import dialect_of
from localllm.server.dialects.tgi import api as tgi_api
from localllm.server.dialects.tgi.regex_grammar import UnsupportedRegex, regex_to_gbnf

from .test_batch import done_of, make, run


def test_the_body_decides_the_dialect_of_post_generate() -> None:
    assert dialect_of({"inputs": "x", "parameters": {}}) == "tgi"
    assert dialect_of({"prompt": "x", "max_tokens": 3}) == "vllm"
    assert dialect_of({"prompt": "x", "session_id": 3, "interactive_mode": True}) == "lmdeploy"
    assert dialect_of({"prompt": "x", "instance_id": 3, "sequence_start": True}) == "lmdeploy"
    with pytest.raises(InvalidRequest, match="TGI"):
        dialect_of({"text": "x"})


def test_each_dialect_has_its_own_error_shape_and_statuses() -> None:
    bad = InvalidRequest("top_p must be < 1", field="top_p")
    assert tgi_api.tgi_error(bad) == {"error": "top_p must be < 1", "error_type": "validation"}
    assert tgi_api.error_response(bad).status_code == 422
    assert tgi_api.error_response(ServerBusy("busy")).status_code == 429
    assert tgi_api.tgi_error(EngineError("crashed"))["error_type"] == "generation"
    assert tgi_api.error_response(EngineError("crashed")).status_code == 424
    assert vllm_api.vllm_error(bad) == {
        "object": "error",
        "message": "top_p must be < 1",
        "type": "BadRequestError",
        "param": "top_p",
        "code": 400,
    }
    assert lmdeploy_api.lmdeploy_error(bad) == {
        "object": "error",
        "message": "top_p must be < 1",
        "code": 400,
        "param": "top_p",
        "type": "invalid_request_error",
    }
    assert triton_api.triton_error(bad) == {"error": "top_p must be < 1"}
    assert triton_api.error_response(ServerBusy("busy")).status_code == 503


def test_regex_grammar_translates_or_refuses() -> None:
    assert regex_to_gbnf(r"^\d{3}-(yes|no)$") == 'root ::= [0-9]{3} "-" (("yes" | "no"))\n'
    assert regex_to_gbnf(r'"[^"\\]*"') == 'root ::= "\\x22" [^"\\x5C]* "\\x22"\n'
    for pattern in (r"(a)\1", r"(?=a)b", r"\bword", r"a^b", r"(?i)abc", "[[:alpha:]]"):
        with pytest.raises(UnsupportedRegex):
            regex_to_gbnf(pattern)


def test_token_texts_add_up_to_the_output() -> None:
    def lp(i: int, text: str) -> TokenLogprob:
        return TokenLogprob(i, text, tuple(text.encode()), -0.1)

    # " Hel" held back (it may begin the stop sequence " Hello!"), released with "lo"; then text with no token
    tokens = [Token("", (lp(1, " Hel"),)), Token(" Hello", (lp(2, "lo"),)), Token(" the", (lp(3, " the"),))]
    tokens.append(Token("re"))
    pairs = tgi_api.split_text(tokens)
    assert [text for _, text in pairs] == ["", " Hello", " there"]
    spans = tgi_api.char_offsets("Once ünder", [(1, b""), (2, b" Once"), (3, b" \xc3\xbc"), (4, b"nder")])
    assert spans == [(0, 0), (0, 4), (4, 6), (6, 10)]


def test_a_session_keeps_its_slot_when_other_prompts_share_only_the_bos() -> None:
    batcher, _, sent = make("xyz", n_parallel=3)
    batcher.handle("s1", Job("^once upon"))
    run(batcher)
    # other conversations: each shares one token ("^", the BOS here) with the session's slot
    for i, other in enumerate(("^the dog", "^a cat")):
        batcher.handle(f"o{i}", Job(other))
        run(batcher)
    batcher.handle("s2", Job("^once uponxyz and then"))
    run(batcher)
    assert done_of(sent, "s2")["prompt_eval_count"] == len(" and then")
