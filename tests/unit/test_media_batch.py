"""The decode loop with media over a scripted engine and a fake projector: spans, identities, cuts, counts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from localllm.domain.media import MARKER, Media
from localllm.runner.batch import Batcher
from localllm.runner.kvfiles import KVFiles
from localllm.runner.kvstates import KVStates
from localllm.runner.mediaprompt import MediaError, MediaPrompt, MediaSpan, pseudo_ids, snap, text_run
from localllm.runner.protocol import Job, Tokenize

from .test_batch import ScriptEngine, ScriptSampler, done_of, recorder, run, text_of

N_MEDIA = 4  # tokens per media item in the fake projector


class MediaEngine(ScriptEngine):
    """A ScriptEngine that refuses a pseudo id in its text batch (a media chunk must go through the projector)."""

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        assert token >= 0, f"a media position ({token}) was staged as text"
        return super().add(token, pos, seq, logits)


class FakeProjector:
    """Text tokens are characters; each item is N_MEDIA positions; `evaluate` writes them into the engine's kv."""

    vision = True
    audio = False

    def __init__(self, engine: ScriptEngine, fail: bool = False) -> None:
        self.engine = engine
        self.fail = fail
        self.evaluated: list[tuple[str, int, int]] = []  # (source, n_past, seq)
        self.live: set[int] = set()  # ids of chunks handed out and not released
        self._next = 0

    def tokenize(self, text: str, media: Sequence[Media], *, add_bos: bool) -> MediaPrompt:
        pieces = text.split(MARKER)
        if len(pieces) - 1 != len(media):
            raise MediaError(f"the prompt has {len(pieces) - 1} media markers for {len(media)} media items")
        for item in media:
            if item.data == b"bad":
                raise MediaError(f"{item.source}: not an image")
        tokens: list[int] = []
        spans: list[MediaSpan] = []
        for i, piece in enumerate(pieces):
            tokens.extend(ord(c) for c in piece)
            if i < len(media):
                self._next += 1
                self.live.add(self._next)
                spans.append(MediaSpan(len(tokens), N_MEDIA, self._next, media[i].source))
                tokens.extend(pseudo_ids(media[i].digest, N_MEDIA))
        return MediaPrompt(tokens, tuple(spans))

    def evaluate(self, span: MediaSpan, n_past: int, seq: int) -> int:
        assert span.chunk in self.live
        self.evaluated.append((span.source, n_past, seq))
        if self.fail:
            return -3
        kv = self.engine.kv.setdefault(seq, [])
        assert len(kv) == n_past, "a media chunk goes right after what the sequence holds"
        kv.extend(range(-1, -span.n - 1, -1))
        return 0

    def release(self, spans: Sequence[MediaSpan]) -> None:
        for span in spans:
            assert span.chunk in self.live, "a chunk released twice"
            self.live.discard(span.chunk)


def make(
    script: str = "ok", *, states: KVStates | None = None, fail: bool = False, projector: bool = True, **kw: Any
) -> tuple[Batcher, MediaEngine, FakeProjector, list[dict[str, Any]]]:
    engine = MediaEngine(script, **kw)
    fake = FakeProjector(engine, fail)
    sent: list[dict[str, Any]] = []
    batcher = Batcher(
        engine,
        recorder(sent),
        lambda params: ScriptSampler(script),
        states=states,
        projector=fake if projector else None,
    )
    return batcher, engine, fake, sent


def image(seed: int, source: str = "images[0]") -> Media:
    return Media("image", hashlib.sha256(str(seed).encode()).digest(), source)


# -- identities and cuts ------------------------------------------------------------------------------


def test_pseudo_ids_are_negative_and_name_the_bytes_and_the_position() -> None:
    a, b = image(1).digest, image(2).digest
    assert all(t < 0 for t in pseudo_ids(a, 600))
    assert pseudo_ids(a, 16) == pseudo_ids(a, 16)
    assert pseudo_ids(a, 16)[0] != pseudo_ids(b, 16)[0], "a different image differs from its first position"
    assert len(set(pseudo_ids(a, 600))) == 600
    assert pseudo_ids(a, 4, part=1) != pseudo_ids(a, 4), "an image's second slice is not its first"


def test_a_cut_snaps_to_the_start_of_the_chunk_it_falls_in() -> None:
    spans = (MediaSpan(3, 4, None, "a"), MediaSpan(10, 4, None, "b"))
    assert [snap(spans, n) for n in range(16)] == [0, 1, 2, 3, 3, 3, 3, 7, 8, 9, 10, 10, 10, 10, 14, 15]
    assert text_run([5, 6, -1, 7], 10) == 2 and text_run([5, 6, 7], 2) == 2 and text_run([-1, 5], 4) == 0


# -- the loop -----------------------------------------------------------------------------------------


def test_media_tokens_are_counted_and_evaluated_once_by_the_projector() -> None:
    batcher, engine, fake, sent = make(n_parallel=1, n_ctx=128, n_batch=16)
    batcher.handle("a", Job(f"ab{MARKER}cd", media=(image(1),)))
    run(batcher)
    done = done_of(sent, "a")
    assert done["prompt_eval_count"] == 2 + N_MEDIA + 2 and done["cached_tokens"] == 0
    assert fake.evaluated == [("images[0]", 2, 0)]
    assert text_of(sent, "a") == "ok"
    assert done["context"] == [], "pseudo ids never go back to a client"
    assert not fake.live, "the request's chunks were released"


def test_a_count_with_media_is_the_prompt_the_job_evaluates() -> None:
    """`Tokenize` with media lays the prompt out as `Job` does (the same code): its length is what is evaluated."""
    batcher, engine, fake, sent = make(n_parallel=1, n_ctx=128, n_batch=16)
    prompt, media = f"ab{MARKER}cd{MARKER}e", (image(1), image(2, "images[1]"))
    batcher.handle("t", Tokenize(prompt, media=media))
    tokens = sent[-1]["tokens"]
    assert sent[-1]["ev"] == "tokens" and "pieces" not in sent[-1]
    assert tokens[2 : 2 + N_MEDIA] == pseudo_ids(image(1).digest, N_MEDIA), "a media chunk's positions"
    assert not fake.evaluated and not fake.live, "counted, not encoded; its chunks released"
    batcher.handle("a", Job(prompt, media=media))
    run(batcher)
    assert done_of(sent, "a")["prompt_eval_count"] == len(tokens) == 5 + 2 * N_MEDIA


@pytest.mark.parametrize(
    ("projector", "prompt", "says"),
    [
        (False, f"x{MARKER}y", "no projector"),
        (True, f"x{MARKER}", "images[0]: the prompt ends with it"),
        (True, "no marker", "0 media markers for 1"),
    ],
)
def test_a_count_refuses_what_the_job_would(projector: bool, prompt: str, says: str) -> None:
    batcher, engine, fake, sent = make(projector=projector)
    batcher.handle("t", Tokenize(prompt, media=(image(1, "images[0]"),)))
    error = sent[-1]
    assert error["ev"] == "error" and error["kind"] == "request" and says in error["message"]
    assert not fake.live


def test_the_same_image_again_is_cached_and_a_different_one_is_not() -> None:
    batcher, engine, fake, sent = make(n_parallel=1, n_ctx=128, n_batch=16)
    first = f"ab{MARKER}cd"
    batcher.handle("a", Job(first, media=(image(1),)))
    run(batcher)
    # the conversation goes on: its history (with the image) and more text
    batcher.handle("b", Job(first + "ok" + "ef", media=(image(1),)))
    run(batcher)
    again = done_of(sent, "b")
    assert again["cached_tokens"] >= 2 + N_MEDIA + 2 and len(fake.evaluated) == 1, "the image's KV was reused"
    batcher.handle("c", Job(first + "ok" + "ef", media=(image(2),)))
    run(batcher)
    other = done_of(sent, "c")
    assert other["cached_tokens"] == 2, "only the text before the image matches"
    assert other["prompt_eval_count"] == N_MEDIA + 2 + 2 + 2 and len(fake.evaluated) == 2
    assert not fake.live


def test_a_text_request_keeps_batching_beside_a_media_evaluation() -> None:
    batcher, engine, fake, sent = make(n_parallel=2, n_ctx=128, n_batch=16)
    batcher.handle("img", Job(f"a{MARKER}b", media=(image(1),)))
    batcher.handle("txt", Job("hello"))
    batcher.step()  # the image request's text before the image, the text request's prompt
    batcher.step()  # the image (projector), beside the text request's next token in the batch
    assert fake.evaluated == [("images[0]", 1, 0)]
    staged = engine.decoded[-1]
    assert 1 in {seq for _, _, seq, _ in staged}, "the text request decoded in the step of the image"
    run(batcher)
    assert text_of(sent, "img") == text_of(sent, "txt") == "ok"


def test_one_media_chunk_per_step() -> None:
    batcher, engine, fake, sent = make(n_parallel=2, n_ctx=128, n_batch=16)
    batcher.handle("a", Job(f"{MARKER}{MARKER}x", media=(image(1), image(2, "images[1]"))))
    batcher.handle("b", Job(f"{MARKER}y", media=(image(3),)))
    batcher.step()
    assert len(fake.evaluated) == 1
    batcher.step()
    assert len(fake.evaluated) == 2
    run(batcher)
    assert [s for s, _, _ in fake.evaluated] == ["images[0]", "images[0]", "images[1]"]
    assert done_of(sent, "a")["prompt_eval_count"] == 2 * N_MEDIA + 1


def test_the_tail_rounding_never_evaluates_part_of_a_media_chunk_again() -> None:
    batcher, engine, fake, sent = make(n_parallel=1, n_ctx=128, n_batch=32, tail_tile=8)
    first = f"abcdef{MARKER}"
    batcher.handle("a", Job(first + "g", media=(image(1),)))
    run(batcher)
    batcher.handle("b", Job(first + "gok" + "hi", media=(image(1),)))  # a two-token tail after the image
    run(batcher)
    assert len(fake.evaluated) == 1, "the image was not evaluated again"
    done = done_of(sent, "b")
    assert done["cached_tokens"] + done["prompt_eval_count"] == 6 + N_MEDIA + 5


def test_a_saved_state_with_an_image_comes_back_whole() -> None:
    batcher, engine, fake, sent = make(
        "!", states=KVStates(1 << 20, min_tokens=32), n_parallel=1, n_ctx=256, n_batch=64
    )
    long = "".join(chr(0x4E00 + i) for i in range(40))
    prompt = long + MARKER + "?"
    batcher.handle("a", Job(prompt, media=(image(1),)))
    run(batcher)
    batcher.handle("other", Job("x" * 60))  # takes the slot: the image conversation is saved
    run(batcher)
    batcher.handle("b", Job(prompt + "!" + "more", media=(image(1),)))
    run(batcher)
    done = done_of(sent, "b")
    assert done["cached_tokens"] >= 40 + N_MEDIA + 1 and len(fake.evaluated) == 1
    batcher.handle("c", Job(prompt + "!" + "more", media=(image(2),)))
    run(batcher)
    assert done_of(sent, "c")["cached_tokens"] <= 40 and len(fake.evaluated) == 2


# -- refusals -----------------------------------------------------------------------------------------


def test_media_for_a_model_without_a_projector_is_a_request_failure_naming_the_field() -> None:
    batcher, engine, fake, sent = make(projector=False)
    batcher.handle("a", Job(f"x{MARKER}", media=(image(1, "messages[0].content[1].image_url"),)))
    error = sent[-1]
    assert error["ev"] == "error" and error["kind"] == "request"
    assert "messages[0].content[1].image_url" in error["message"] and "no projector" in error["message"]


@pytest.mark.parametrize(
    ("prompt", "media", "says"),
    [
        ("no marker", (image(1),), "0 media markers for 1"),
        (f"x{MARKER}y", (Media("image", b"bad", "images[2]"),), "images[2]: not an image"),
        (f"x{MARKER}", (image(1, "images[0]"),), "images[0]: the prompt ends with it"),
    ],
)
def test_a_bad_media_request_fails_alone(prompt: str, media: tuple[Media, ...], says: str) -> None:
    batcher, engine, fake, sent = make(n_parallel=2)
    batcher.handle("good", Job("hi"))
    batcher.handle("bad", Job(prompt, media=media))
    error = next(m for m in sent if m.get("id") == "bad")
    assert error["ev"] == "error" and error["kind"] == "request" and says in error["message"]
    run(batcher)
    assert text_of(sent, "good") == "ok" and not fake.live


def test_a_failed_media_evaluation_fails_its_request_only() -> None:
    batcher, engine, fake, sent = make(fail=True, n_parallel=2)
    batcher.handle("good", Job("hello"))
    batcher.handle("bad", Job(f"x{MARKER}y", media=(image(1, "images[0]"),)))
    run(batcher)
    error = next(m for m in sent if m.get("id") == "bad")
    assert error["ev"] == "error" and "images[0]" in error["message"]
    assert text_of(sent, "good") == "ok" and not fake.live


def test_a_context_with_ids_outside_the_vocabulary_is_a_request_failure() -> None:
    batcher, engine, fake, sent = make(n_parallel=2)
    batcher.handle("good", Job("hello"))
    for rid, bad in (("neg", -5), ("big", engine.n_vocab)):
        batcher.handle(rid, Job("more", context=(104, bad)))
        error = next(m for m in sent if m.get("id") == rid)
        assert error["ev"] == "error" and error["kind"] == "request" and str(bad) in error["message"]
    run(batcher)
    assert text_of(sent, "good") == "ok"


def test_a_context_before_media_shifts_its_spans() -> None:
    batcher, engine, fake, sent = make(n_parallel=1, n_ctx=128, n_batch=16)
    batcher.handle("a", Job(f"c{MARKER}d", context=(104, 105), media=(image(1),)))
    run(batcher)
    assert fake.evaluated == [("images[0]", 3, 0)]
    assert done_of(sent, "a")["prompt_eval_count"] == 2 + 1 + N_MEDIA + 1


def test_an_image_conversation_comes_back_from_disk_after_a_restart(tmp_path: Path) -> None:
    """Pseudo ids are negative: the state files' token arrays keep them (signed int32), and a restarted runner
    finds the conversation by its image."""
    long = "".join(chr(0x4E00 + i) for i in range(70))
    prompt = long + MARKER + "?"

    def runner() -> tuple[Batcher, MediaEngine, FakeProjector, list[dict[str, Any]]]:
        files = KVFiles(tmp_path, {"model": "fake"}, 1 << 30)
        return make("!", states=KVStates(1 << 20, files), n_parallel=1, n_ctx=256, n_batch=64)

    batcher, engine, fake, sent = runner()
    batcher.handle("a", Job(prompt, media=(image(1),)))
    run(batcher)
    batcher.close()  # a runner stopping writes its slots out
    for seed, cached in ((1, 70 + N_MEDIA + 2), (2, 70)):  # another image: only the text before it
        batcher, engine, fake, sent = runner()
        batcher.handle("b", Job(prompt + "!" + "more", media=(image(seed),)))
        run(batcher)
        done = done_of(sent, "b")
        assert done["cached_tokens"] == cached, f"image {seed}"
        assert len(fake.evaluated) == (0 if seed == 1 else 1)
        batcher.close()
