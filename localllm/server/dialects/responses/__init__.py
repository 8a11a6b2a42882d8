"""OpenAI's Responses API (`/v1/responses`), stateful: what Codex CLI and the `openai` SDK's `client.responses`
speak, over the same chat generation as `/v1/chat/completions` (its tools, forced calls and errors).

A response is kept (`store`, the default) with the conversation it ends (`responses_store`: in memory, and in
`LOCALLLM_RESPONSES_DIR` when it is set, so it survives a restart): a request with
`previous_response_id` is that conversation followed by its own `input`, so its prompt begins with the
earlier prompt and the runner's slot reuses the KV cache of it (`usage.input_tokens_details.cached_tokens`).
Streams are SSE with an `event:` line and a `sequence_number` on every event, ending with
`response.completed` (or `response.incomplete`, `response.failed`), without `[DONE]`.
"""

from __future__ import annotations

from ..contract import Dialect
from ..openai.api import ERRORS
from . import api, replies, wire

DIALECT = Dialect(
    "responses", api.routes, ERRORS, api.paths, prefix="/v1/responses", wire=wire.MODELS, replies=replies.MODELS
)
