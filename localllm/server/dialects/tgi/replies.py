"""text-generation-inference's answers as reply models (`server/replies.py`): a generation, whole or as stream
events, the server's info and a tokenization."""

from __future__ import annotations

from ...replies import UNSET, Reply, TGIError, Unset


class TGIToken(Reply, kw_only=True):
    id: int
    text: str
    logprob: float | None  # None: the end-of-sequence token the generation ended with
    special: bool


class PrefillToken(Reply, kw_only=True):
    """A token of the input (`decoder_input_details`)."""

    id: int
    text: str
    logprob: None


class _Sequence(Reply, kw_only=True):
    finish_reason: str
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[TGIToken]
    top_tokens: list[list[TGIToken]] | Unset = UNSET  # with `top_n_tokens`


class BestOfSequence(_Sequence, kw_only=True):
    """One of the other candidates of `best_of`."""

    generated_text: str


class TGIDetails(_Sequence, kw_only=True):
    best_of_sequences: list[BestOfSequence] | Unset = UNSET


class TGIGeneration(Reply, kw_only=True):
    """`POST /generate` (and `POST /` listed: a list of one); `details` with `details: true`."""

    generated_text: str
    details: TGIDetails | Unset = UNSET


class StreamDetails(Reply, kw_only=True):
    finish_reason: str
    generated_tokens: int
    seed: int | None
    input_length: int


class TGIStreamEvent(Reply, kw_only=True):
    """One token of `/generate_stream`; the last also has the whole text and, with `details`, the details."""

    index: int
    token: TGIToken
    top_tokens: list[TGIToken] | Unset = UNSET
    generated_text: str | None
    details: StreamDetails | None


class TGIInfo(Reply, kw_only=True):
    model_id: str | None
    model_sha: None
    model_pipeline_tag: str
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    max_client_batch_size: int
    validation_workers: int
    router: str
    version: str
    sha: None
    docker_label: None


class TGITokenSpan(Reply, kw_only=True):
    """A token of `POST /tokenize` (TGI's body): its id, text and character offsets in `inputs`."""

    id: int
    text: str
    start: int
    stop: int


MODELS = (TGIError, TGIGeneration, list[TGIGeneration], TGIStreamEvent, TGIInfo, list[TGITokenSpan])
