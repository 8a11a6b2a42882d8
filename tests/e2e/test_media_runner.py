"""Images and audio at the runner: the tiny vision model made here (tests/mediamodels.py) on real llama.cpp and
its mtmd, through the decode loop in-process and through a runner process."""

from __future__ import annotations

import asyncio
import ctypes
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from llama_cpp import mtmd_cpp as mtmd

from localllm.domain.events import Done, Token
from localllm.domain.media import MARKER, Media
from localllm.runner.batch import Batcher
from localllm.runner.engine import Engine, LoadError
from localllm.runner.process import RunnerProcess
from localllm.runner.protocol import Job, LoadSpec, Sampling
from localllm.runner.sampler import Sampler

from ..conftest import model_file
from ..ggufcopy import write_random_llama
from ..mediamodels import AUDIO_TOKENS, IMAGE_TOKENS, VisionModel, png, wav
from ..unit.test_batch import recorder

pytestmark = pytest.mark.model

USER = "<|user|>\nwhat is in this picture? "
TAIL = " tell me.\n<|assistant|>\n"


def _image(seed: int, source: str = "images[0]") -> Media:
    return Media("image", png(48, 40, seed), source)


# -- the model itself, with llama.cpp's mtmd only -------------------------------------------------------


def _logits_after(model: Any, ctx: Any, handle: Any, text: bytes, data: bytes) -> tuple[list[int], np.ndarray]:
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(handle, buf, len(data), False)
    assert bitmap, "mtmd decodes the PNG written here"
    chunks = mtmd.mtmd_input_chunks_init()
    inp = mtmd.mtmd_input_text(text, len(text), True, True)
    assert mtmd.mtmd_tokenize(handle, chunks, ctypes.byref(inp), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
    kinds = []
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        kinds.append((int(mtmd.mtmd_input_chunk_get_type(chunk)), int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))))
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    n_past = llama_cpp.llama_pos(0)
    assert mtmd.mtmd_helper_eval_chunks(handle, ctx, chunks, 0, 0, 256, True, ctypes.byref(n_past)) == 0
    assert n_past.value == sum(n for _, n in kinds)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(32000,)).copy()
    mtmd.mtmd_input_chunks_free(chunks)
    mtmd.mtmd_bitmap_free(bitmap)
    return [k for k, _ in kinds], logits


def test_the_tiny_model_made_here_evaluates_an_image_with_mtmd(tiny_vlm: VisionModel) -> None:
    """The recipe (mediamodels.py) loads in llama.cpp's mtmd as a LLaVA projector; an image becomes 16 tokens,
    and it is really seen: another image gives other logits after the same text, the same image the same."""
    assert tiny_vlm.model.stat().st_size < 6 << 20 and tiny_vlm.projector.stat().st_size < 1 << 20
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(tiny_vlm.model).encode(), llama_cpp.llama_model_default_params())
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_threads, cparams.n_threads_batch = 256, 256, 2, 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.warmup, params.n_threads = False, False, 2
    handle = mtmd.mtmd_init_from_file(str(tiny_vlm.projector).encode(), model, params)
    try:
        assert handle and mtmd.mtmd_support_vision(handle) and not mtmd.mtmd_support_audio(handle)
        text = f"{USER}{MARKER}{TAIL}".encode()
        kinds, one = _logits_after(model, ctx, handle, text, png(48, 40, 1))
        assert kinds == [
            mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT,
            mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE,
            mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT,
        ]
        _, same = _logits_after(model, ctx, handle, text, png(48, 40, 1))
        _, other = _logits_after(model, ctx, handle, text, png(48, 40, 2))
        assert np.allclose(one, same) and not np.allclose(one, other, atol=1e-3)
    finally:
        if handle:
            mtmd.mtmd_free(handle)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


# -- the decode loop with the real engine -------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_vlm_audio: VisionModel) -> Iterator[Engine]:
    spec = LoadSpec(
        model_path=str(tiny_vlm_audio.model),
        projector=str(tiny_vlm_audio.projector),
        n_ctx=1024,
        n_threads=2,
        n_parallel=2,
    )
    loaded = Engine(spec)
    yield loaded
    loaded.close()


class Loop:
    def __init__(self, engine: Engine) -> None:
        for seq in range(engine.n_parallel):
            engine.forget(seq, 0)
        self.engine = engine
        self.sent: list[dict[str, Any]] = []
        self.batcher = Batcher(
            engine, recorder(self.sent), functools.partial(Sampler, engine), projector=engine.projector
        )

    def submit(self, rid: str, prompt: str, media: tuple[Media, ...] = (), n: int = 12) -> None:
        self.batcher.handle(rid, Job(prompt, Sampling(temperature=0), num_predict=n, media=media))

    def run(self) -> None:
        while self.batcher.busy:
            self.batcher.step()

    def ask(self, rid: str, prompt: str, media: tuple[Media, ...] = (), n: int = 12) -> dict[str, Any]:
        self.submit(rid, prompt, media, n)
        self.run()
        return self.answer(rid)

    def answer(self, rid: str) -> dict[str, Any]:
        last = [m for m in self.sent if m.get("id") == rid][-1]
        last["text"] = "".join(m["text"] for m in self.sent if m.get("id") == rid and m["ev"] == "text")
        return last


def test_the_engine_says_what_its_projector_takes(engine: Engine) -> None:
    info = engine.info()
    assert info.vision and info.audio


def test_prompt_tokens_grow_by_the_images_tokens(engine: Engine) -> None:
    loop = Loop(engine)
    head = engine.tokenize(USER)
    tail = engine.tokenize(TAIL, add_bos=False)
    done = loop.ask("img", f"{USER}{MARKER}{TAIL}", (_image(1),))
    assert done["ev"] == "done" and done["eval_count"] == 12
    assert done["prompt_eval_count"] == len(head) + IMAGE_TOKENS + len(tail)
    assert done["context"] == [], "no context for a media prompt: its pseudo ids are no tokens"


def test_the_same_image_again_is_cached_and_a_different_one_is_not(engine: Engine) -> None:
    loop = Loop(engine)
    prompt = f"{USER}{MARKER}{TAIL}"
    first = loop.ask("a", prompt, (_image(1),))
    follow = prompt + first["text"] + "\n<|user|>\nand now?\n<|assistant|>\n"
    again = loop.ask("b", follow, (_image(1),))
    n_prompt = first["prompt_eval_count"]
    assert again["cached_tokens"] >= n_prompt, "the conversation's image came from the cache"
    assert again["prompt_eval_count"] < 32 and again["prompt_eval_count"] + again["cached_tokens"] > n_prompt
    other = loop.ask("c", follow, (_image(2),))
    assert other["cached_tokens"] <= len(engine.tokenize(USER)), "a different image matches nothing past it"
    assert other["prompt_eval_count"] >= IMAGE_TOKENS


def test_the_same_image_gives_the_same_greedy_text_cached_or_not(engine: Engine) -> None:
    prompt = f"{USER}{MARKER}{TAIL}"
    fresh = Loop(engine).ask("a", prompt, (_image(3),))
    loop = Loop(engine)
    loop.ask("warm", prompt, (_image(3),), n=1)
    cached = loop.ask("b", prompt, (_image(3),))
    assert cached["cached_tokens"] > IMAGE_TOKENS and cached["text"] == fresh["text"] and fresh["text"]
    other = Loop(engine).ask("c", prompt, (_image(4),))
    assert other["text"] != fresh["text"], "the image is seen: another one gives another answer"


def test_a_text_request_batched_beside_an_image_request_answers_as_alone(engine: Engine) -> None:
    text_prompt = "<|user|>\nOnce upon a time there was\n<|assistant|>\n"
    alone = Loop(engine).ask("t", text_prompt, n=16)
    image_alone = Loop(engine).ask("i", f"{USER}{MARKER}{TAIL}", (_image(5),), n=16)
    loop = Loop(engine)
    loop.submit("i", f"{USER}{MARKER}{TAIL}", (_image(5),), n=16)
    loop.submit("t", text_prompt, n=16)
    loop.run()
    assert loop.answer("t")["text"] == alone["text"] and alone["text"]
    assert loop.answer("i")["text"] == image_alone["text"]


def test_audio_is_evaluated_too(engine: Engine) -> None:
    loop = Loop(engine)
    head = engine.tokenize("<|user|>\nlisten: ")
    tail = engine.tokenize(TAIL, add_bos=False)
    done = loop.ask("a", f"<|user|>\nlisten: {MARKER}{TAIL}", (Media("audio", wav(0.5), "input_audio"),))
    assert done["ev"] == "done" and done["prompt_eval_count"] == len(head) + AUDIO_TOKENS + len(tail)


@pytest.mark.parametrize(
    ("media", "says"),
    [
        ((Media("image", png(8, 8)[:40], "messages[0].images[0]"),), "messages[0].images[0]: not an image"),
        ((Media("image", wav(0.2), "messages[0].images[0]"),), "messages[0].images[0]: the bytes are audio"),
        ((_image(1), _image(2, "images[1]")), "1 media markers for 2"),
    ],
)
def test_bad_media_fails_the_request_naming_the_item(engine: Engine, media: tuple[Media, ...], says: str) -> None:
    loop = Loop(engine)
    failed = loop.ask("bad", f"{USER}{MARKER}{TAIL}", media)
    assert failed["ev"] == "error" and failed["kind"] == "request" and says in failed["message"]
    assert loop.ask("good", f"{USER}{MARKER}{TAIL}", (_image(1),))["ev"] == "done", "the runner goes on"


def test_a_projector_for_another_model_is_a_load_error(tiny_vlm: VisionModel, tmp_path: Path) -> None:
    wider = write_random_llama(model_file("llama-2-tiny-random.gguf"), tmp_path / "wide.gguf", n_embd=128, n_head=4)
    with pytest.raises(LoadError, match="could not load the projector"):
        Engine(LoadSpec(model_path=str(wider), projector=str(tiny_vlm.projector), n_ctx=256))


# -- over the runner boundary -------------------------------------------------------------------------


def test_a_runner_process_takes_media_over_its_boundary(tiny_vlm: VisionModel, stories_gguf: Any) -> None:
    async def main() -> None:
        spec = LoadSpec(model_path=str(tiny_vlm.model), projector=str(tiny_vlm.projector), n_ctx=512, n_threads=2)
        runner = await RunnerProcess.start(spec)
        try:
            assert runner.info.vision and not runner.info.audio
            job = Job(f"{USER}{MARKER}{TAIL}", Sampling(temperature=0), num_predict=6, media=(_image(1),))
            events = [e async for e in runner.generate(job)]
            done = events[-1]
            assert isinstance(done, Done) and any(isinstance(e, Token) for e in events)
            tail = await runner.pieces(TAIL, add_bos=False)
            assert done.prompt_eval_count == len(await runner.tokenize(USER)) + IMAGE_TOKENS + len(tail)
            with pytest.raises(Exception, match="images\\[0\\]"):
                bad = Job(f"{USER}{MARKER}{TAIL}", num_predict=2, media=(Media("image", b"GIF89a", "images[0]"),))
                _ = [e async for e in runner.generate(bad)]
        finally:
            await runner.stop()
        text_only = await RunnerProcess.start(LoadSpec(model_path=str(stories_gguf), n_ctx=256, n_threads=2))
        try:
            assert not text_only.info.vision
            with pytest.raises(Exception, match="no projector"):
                job = Job(f"x {MARKER} y", num_predict=2, media=(_image(1, "messages[0].images[0]"),))
                _ = [e async for e in text_only.generate(job)]
        finally:
            await text_only.stop()

    asyncio.run(main())


def test_a_context_outside_the_vocabulary_fails_alone(engine: Engine) -> None:
    """Such an id reaching llama_decode would fail the whole step's batch, and every request in it."""
    loop = Loop(engine)
    loop.submit("good", "<|user|>\nOnce upon a time\n<|assistant|>\n", n=8)
    loop.batcher.handle("bad", Job("more", context=(1, engine.n_vocab + 5), num_predict=4))
    loop.run()
    bad, good = loop.answer("bad"), loop.answer("good")
    assert bad["ev"] == "error" and bad["kind"] == "request" and str(engine.n_vocab + 5) in bad["message"]
    assert good["ev"] == "done" and good["eval_count"] == 8
