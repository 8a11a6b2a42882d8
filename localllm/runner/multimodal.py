"""A multimodal projector loaded beside the model with llama.cpp's mtmd: media bytes in, prompt chunks out.

`Projector` loads the projector GGUF (mmproj) for the engine's model and context, says whether it takes images
and/or audio, cuts a prompt with `MARKER`s into text and media chunks (`mtmd_tokenize`, each item decoded from
its bytes by `mtmd_helper_bitmap_init_from_buf`, its bitmap id set to the item's sha256), and evaluates one
media chunk into one sequence (`mtmd_helper_eval_chunk_single`: the encoder, then llama_decode of its
embeddings in batches), which the decode loop does between its steps. The prompt the loop sees is
`mediaprompt.MediaPrompt`: tokens with pseudo ids for the media positions (see mediaprompt.py).

Models whose media chunks take fewer positions than tokens (M-RoPE: the Qwen2-VL family) are refused at load:
the decode loop counts one position per token.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp
from llama_cpp import mtmd_cpp as mtmd

from ..domain.media import MARKER, Media
from .cstruct import set_fields
from .mediaprompt import MediaError, MediaPrompt, MediaSpan, pseudo_ids

_KINDS = {mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE: "image", mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO: "audio"}


class ProjectorError(Exception):
    """The projector did not load, or cannot serve this model."""


class Projector:
    def __init__(self, path: str, model: Any, ctx: Any, *, n_batch: int, use_gpu: bool, n_threads: int) -> None:
        params = mtmd.mtmd_context_params_default()
        set_fields(params, use_gpu=use_gpu, print_timings=False, warmup=False, media_marker=MARKER.encode())
        if n_threads > 0:
            set_fields(params, n_threads=n_threads)
        handle = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not handle:
            raise ProjectorError(
                f"llama.cpp could not load the projector {path} (not a projector GGUF for this model's architecture "
                "and width, or out of memory)"
            )
        self._ctx = handle
        self._lctx = ctx
        self.n_batch = n_batch  # tokens per decode of a chunk's embeddings: the context's ubatch
        self.vision = bool(mtmd.mtmd_support_vision(handle))
        self.audio = bool(mtmd.mtmd_support_audio(handle))
        if mtmd.mtmd_decode_use_mrope(handle):
            self.close()
            raise ProjectorError(
                f"the projector {path} needs M-RoPE positions (a Qwen2-VL-family model), which this runner does "
                "not evaluate yet: load the model without its projector to use it for text"
            )

    def tokenize(self, text: str, media: Sequence[Media], *, add_bos: bool) -> MediaPrompt:
        """See mediaprompt.Projector.tokenize."""
        if text.count(MARKER) != len(media):
            raise MediaError(f"the prompt has {text.count(MARKER)} media markers for {len(media)} media items")
        bitmaps: list[Any] = []
        chunks = None
        try:
            by_digest: dict[str, Media] = {}
            for item in media:
                bitmaps.append(self._bitmap(item))
                by_digest[item.digest] = item
            chunks = mtmd.mtmd_input_chunks_init()
            if not chunks:
                raise MediaError("llama.cpp could not allocate the prompt's chunks")
            data = text.encode("utf-8")
            inp = mtmd.mtmd_input_text(data, len(data), add_bos, True)
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            code = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
            if code != 0:
                what = ", ".join(m.source or m.kind for m in media)
                raise MediaError(f"{what}: llama.cpp could not prepare the media for this model (code {code})")
            return self._prompt(chunks, by_digest)
        finally:
            if chunks:
                mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _bitmap(self, item: Media) -> Any:
        where = item.source or item.kind
        if item.kind == "image" and not self.vision:
            raise MediaError(f"{where}: this model's projector takes no images")
        if item.kind == "audio" and not self.audio:
            raise MediaError(f"{where}: this model's projector takes no audio")
        buf = (ctypes.c_uint8 * len(item.data)).from_buffer_copy(item.data)
        made = mtmd.mtmd_helper_bitmap_init_from_buf_wrapper(
            self._ctx, buf, len(item.data), False, mtmd.mtmd_helper_init_opt_default()
        )
        if made.video_ctx:
            mtmd.mtmd_helper_video_free(made.video_ctx)
            if made.bitmap:
                mtmd.mtmd_bitmap_free(made.bitmap)
            raise MediaError(f"{where}: video is not taken")
        if not made.bitmap:
            raise MediaError(f"{where}: not an {item.kind} llama.cpp can decode (truncated, or an unknown format)")
        bitmap = made.bitmap
        decoded = "audio" if mtmd.mtmd_bitmap_is_audio(bitmap) else "image"
        if decoded != item.kind:
            mtmd.mtmd_bitmap_free(bitmap)
            raise MediaError(f"{where}: the bytes are {decoded}, not {item.kind}")
        mtmd.mtmd_bitmap_set_id(bitmap, item.digest.encode())
        return bitmap

    def _prompt(self, chunks: Any, by_digest: dict[str, Media]) -> MediaPrompt:
        tokens: list[int] = []
        spans: list[MediaSpan] = []
        parts: dict[str, int] = {}
        try:
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                kind = int(mtmd.mtmd_input_chunk_get_type(chunk))
                if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t(0)
                    ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    tokens.extend(int(ptr[k]) for k in range(n.value))
                    continue
                n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
                if int(mtmd.mtmd_input_chunk_get_n_pos(chunk)) != n_tokens:  # (refused at load; kept as a check)
                    raise MediaError("this model's media chunks take fewer positions than tokens (M-RoPE)")
                digest = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
                item = by_digest.get(digest)
                if n_tokens > self.n_batch and mtmd.mtmd_decode_use_non_causal(self._ctx, chunk):
                    # (Gemma 3: an image's tokens attend to each other, so they are decoded in one ubatch)
                    where = (item.source or item.kind) if item is not None else "media"
                    raise MediaError(
                        f"{where}: its {n_tokens} tokens must be decoded together, more than the batch of "
                        f"{self.n_batch}: load the model with a larger num_batch"
                    )
                part = parts.get(digest, 0)
                parts[digest] = part + 1
                owned = mtmd.mtmd_input_chunk_copy(chunk)
                if not owned:
                    raise MediaError("llama.cpp could not copy a media chunk")
                source = (item.source or item.kind) if item is not None else _KINDS.get(kind, "media")
                spans.append(MediaSpan(len(tokens), n_tokens, owned, source))
                tokens.extend(pseudo_ids(digest or f"{i:064x}", n_tokens, part))
        except BaseException:
            self.release(spans)
            raise
        return MediaPrompt(tokens, tuple(spans))

    def evaluate(self, span: MediaSpan, n_past: int, seq: int) -> int:
        """See mediaprompt.Projector.evaluate."""
        new_n_past = llama_cpp.llama_pos(0)
        code = mtmd.mtmd_helper_eval_chunk_single(
            self._ctx, self._lctx, span.chunk, n_past, seq, self.n_batch, False, ctypes.byref(new_n_past)
        )
        if code == 0 and new_n_past.value != n_past + span.n:
            return -1
        return int(code)

    def release(self, spans: Sequence[MediaSpan]) -> None:
        for span in spans:
            if span.chunk:
                mtmd.mtmd_input_chunk_free(span.chunk)

    def close(self) -> None:
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None
