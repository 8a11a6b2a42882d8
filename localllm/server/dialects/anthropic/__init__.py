"""Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`), as the `anthropic` package
and Claude Code speak it, over the same chat service as every other dialect.

Requests: `system` (a string or text blocks), `messages` (a string or blocks: `text`, `tool_use`,
`tool_result`, `thinking`), custom `tools`, `tool_choice` (`auto`, `any`, `tool`, `none`: the forced ones
constrain the output by the tools' schemas, as `/v1/chat/completions` does), `stop_sequences`, `temperature`,
`top_p`, `top_k`, `thinking`, `metadata`, `stream`. `thinking` blocks of earlier assistant turns are dropped
from the prompt, as Anthropic does; `image` and `document` blocks and server tools are refused.

Answers: a `message` object, or SSE with an `event:` line on every event (`message_start`, `content_block_*`,
`message_delta`, `message_stop`, and `ping` while the first token is awaited, e.g. during a model load).
Errors: `{"type": "error", "error": {"type", "message"}}`, a busy server's 503 as Anthropic's 529.
"""

from __future__ import annotations

from ..contract import Dialect
from . import api, replies, wire

DIALECT = Dialect("anthropic", api.routes, api.ERRORS, api.paths, wire=wire.MODELS, replies=replies.MODELS)
