"""The copier bench models (`bench/make_copier.py`, llama and Gemma 3) on real llama.cpp through the runner's engine and
batcher: the greedy answer copies what follows the earlier occurrence of its last tokens (the longest one), so a
copy-heavy prompt gets a copy, and prompt lookup's drafts on it are kept (the workload speculative decoding is
measured on)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from localllm.runner.engine import Engine
from localllm.runner.protocol import LoadSpec, Sampling
from localllm.runner.requests import Job

from ..conftest import model_file
from ..copier import write_copier
from .test_speculate import generate

GREEDY = Sampling(temperature=0)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    tokenizer = model_file("llama-2-tiny-random.gguf")
    path = write_copier(tmp_path_factory.mktemp("copier") / f"{request.param}.gguf", tokenizer, request.param)
    e = Engine(LoadSpec(model_path=str(path), n_ctx=1024, n_parallel=2, n_threads=2))
    yield e
    e.close()


def words(engine: Engine, n: int, seed: int) -> list[str]:
    """`n` distinct words of the vocabulary (each one token with its leading space), drawn at random."""
    rnd, found = random.Random(seed), dict[str, None]()
    while len(found) < n:
        piece = engine.piece(rnd.randrange(300, 32000)).decode("utf-8", "replace")
        if piece.startswith(" ") and piece[1:].isascii() and piece[1:].isalpha():
            found[piece] = None
    return list(found)


def copy_prompt(engine: Engine, seed: int) -> tuple[str, list[int]]:
    """'A B C ... X' + newline + 'A B', and the tokens of 'C ... X' that should follow."""
    w = words(engine, 60, seed)
    text = "".join(w)
    skip = len(engine.tokenize("".join(w[:2]), add_bos=False))
    return text + "\n" + "".join(w[:2]), engine.tokenize(text, add_bos=False)[skip:]


def answer_tokens(done: dict[str, object]) -> list[int]:
    context, n = done["context"], done["eval_count"]
    assert isinstance(context, list) and isinstance(n, int)
    return context[len(context) - n :]


@pytest.mark.parametrize("seed", [1, 2])
def test_the_greedy_answer_copies_the_text_after_the_last_tokens(engine: Engine, seed: int) -> None:
    prompt, expected = copy_prompt(engine, seed)
    text, done = generate(engine, {"r": Job(prompt, GREEDY, num_predict=len(expected))})["r"]
    got = answer_tokens(done)
    assert len(got) == len(expected), (len(got), len(expected), text)
    same = sum(a == b for a, b in zip(got, expected, strict=True))
    assert same >= 0.9 * len(expected), (same, len(expected), text)


def test_a_long_match_outvotes_a_shorter_later_one(engine: Engine) -> None:
    """A line comes back up to its words K L, which a later decoy line also holds, followed by Z: the latest
    occurrence of the last two tokens says Z, the whole line says M; the copier follows the longest match, as a
    model copying a file does."""
    w = words(engine, 40, 3)
    line = "".join(w[:30])
    decoy = "".join(w[30:34]) + w[10] + w[11] + w[35]  # 'K L' again, followed by another word
    prompt = f"{line}\n{decoy}\n{''.join(w[:12])}"
    text, _ = generate(engine, {"r": Job(prompt, GREEDY, num_predict=8)})["r"]
    assert text.startswith("".join(w[12:18])), text


def test_prompt_lookup_drafts_are_kept_on_the_copier(engine: Engine) -> None:
    prompt, expected = copy_prompt(engine, 4)
    plain = generate(engine, {"r": Job(prompt, GREEDY, num_predict=len(expected))})["r"][1]
    text, done = generate(engine, {"r": Job(prompt, GREEDY, num_predict=len(expected), draft_ngram=True)})["r"]
    drafted, kept = done["draft_count"], done["draft_accepted"]
    assert drafted > len(expected) / 2 and kept >= 0.8 * drafted, done
    assert answer_tokens(done) == answer_tokens(plain), text
