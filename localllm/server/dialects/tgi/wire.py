"""TGI's request body (`POST /generate`, `/generate_stream`, `POST /`, and `POST /tokenize` with `inputs`),
declared once: the parser, the checks and the OpenAPI schema come from these models (`server/wire.py`).

Unknown fields are refused (`Strict`), at the top and in `parameters`, as TGI's own server does. Every
parameter may be null (huggingface_hub's InferenceClient sends null for what it leaves unset): null is the
parameter's default, which `requests.parse` fills in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from ....domain.limits import PROMPT_MAX_BYTES
from ...wire import Lenient, Strict, check_text

MAX_BEST_OF = 4  # TGI's `max_best_of` (reported by GET /info)
MAX_STOP_SEQUENCES = 4  # TGI's `max_stop_sequences` (reported by GET /info)
MAX_TOP_N_TOKENS = 5  # TGI's `max_top_n_tokens`
DEFAULT_MAX_NEW_TOKENS = 1024
MAX_SEED = 2**64 - 1

# -- grammar: a tagged union on `type` ----------------------------------------------------------------------


class TGIJsonGrammar(Strict, tag_field="type", tag="json"):
    value: dict[str, Any] | str  # a JSON schema, or one as a JSON string


class TGIJsonSchemaValue(Lenient):
    schema: dict[str, Any]
    name: str | None = None


class TGIJsonSchemaGrammar(Strict, tag_field="type", tag="json_schema"):
    value: TGIJsonSchemaValue


class TGIRegexGrammar(Strict, tag_field="type", tag="regex"):
    value: str


Grammar = TGIJsonGrammar | TGIJsonSchemaGrammar | TGIRegexGrammar

# -- parameters ---------------------------------------------------------------------------------------------

Positive = Annotated[float, Meta(gt=0)]
Open = Annotated[float, Meta(gt=0, lt=1)]


class TGIParameters(Strict, kw_only=True):
    adapter_id: str | None = None  # refused: no LoRA adapters per request
    best_of: Annotated[int, Meta(ge=1, le=MAX_BEST_OF)] | None = None
    temperature: Positive | None = None
    top_k: Annotated[int, Meta(gt=0)] | None = None
    top_p: Open | None = None
    typical_p: Open | None = None
    seed: Annotated[int, Meta(ge=0)] | None = None  # at most MAX_SEED (msgspec's bounds stop at int64)
    repetition_penalty: Positive | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    max_new_tokens: Annotated[int, Meta(ge=1)] | None = None  # none: DEFAULT_MAX_NEW_TOKENS
    stop: str | Annotated[list[str], Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    top_n_tokens: Annotated[int, Meta(ge=0, le=MAX_TOP_N_TOKENS)] | None = None
    truncate: Annotated[int, Meta(gt=0)] | None = None
    do_sample: bool | None = None
    details: bool | None = None  # none: true
    decoder_input_details: bool | None = None
    return_full_text: bool | None = None
    watermark: bool | None = None  # accepted and ignored: no watermarking here
    grammar: Grammar | None = None


class TGIGenerateRequest(Strict, kw_only=True):
    reported: ClassVar[Mapping[str, type[msgspec.Struct]]] = {"parameters": TGIParameters}  # parameters.typo too
    inputs: str
    parameters: TGIParameters | None = None
    stream: bool | None = None
    model: str | None = None  # none (or InferenceClient's "dummy"): LOCALLLM_DEFAULT_MODEL

    def check(self) -> None:
        check_text([self.inputs], PROMPT_MAX_BYTES, "inputs", "inputs")


MODELS = (TGIGenerateRequest,)
