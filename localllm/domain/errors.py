"""The exception tree of localllm. It knows nothing of HTTP; `server/errors.py` maps it to statuses.

LocalLLMError
 ├── InvalidRequest (ValueError)            bad input; names the field
 │    ├── InvalidModelName                  a name with path tricks or bad characters
 │    ├── NoModelChosen                     a request that leaves the model to a daemon with no default (422)
 │    ├── ModelfileError                    a Modelfile that does not parse ("line N: ...")
 │    └── ContextLengthExceeded             the input does not fit the context window
 │         └── PromptTooLong                 its bytes cannot fit, refused before it is tokenized
 ├── ModelNotFound (LookupError)            no such model in the store (or on the Hub)
 ├── ConfigError (ValueError)               a LOCALLLM_* variable that does not parse
 ├── AddressInUse                           the daemon's address is taken (by another localllm, or not)
 ├── ServerBusy                             the queue is full
 ├── EngineError                            the runner failed; `kind`: out of memory, load, crash, hang
 ├── DownloadError                          a pull failed (network, checksum)
 ├── StoreUnwritable                        the model store refused a write: its disk is full, or read-only (507)
 ├── AccessDenied                           the request may not be served (server/security.py, server/auth.py)
 │    ├── Unauthorized                      no API key, a wrong one, or an expired access token (401)
 │    ├── Forbidden                         a Host or Origin header this daemon does not serve (403)
 │    └── QuotaExceeded                     the key's daily token quota is used up (429)
 └── ClientError                            raised by `localllm.client`
      ├── ResponseError                     the daemon answered with an error
      └── DaemonNotRunning                  nothing listens at the daemon's address
"""

from __future__ import annotations

from typing import Literal


class LocalLLMError(Exception):
    """The root of every error localllm raises on purpose."""


class AddressInUse(LocalLLMError):
    """The daemon cannot listen where LOCALLLM_HOST says: something listens there already."""


class InvalidRequest(LocalLLMError, ValueError):
    """A request that cannot be served as sent; `field` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BodyTooLarge(InvalidRequest):
    """A request body over the daemon's limit (LOCALLLM_MAX_BODY): 413 in every dialect."""


class InvalidModelName(InvalidRequest):
    """A model name that is malformed or would escape the store."""

    def __init__(self, message: str, *, field: str | None = "model") -> None:
        super().__init__(message, field=field)


class NoModelChosen(InvalidRequest):
    """A request naming no model (or huggingface_hub's placeholder "dummy") while LOCALLLM_DEFAULT_MODEL is unset:
    422, as TGI answers a request it cannot validate."""

    def __init__(self, message: str, *, field: str | None = "model") -> None:
        super().__init__(message, field=field)


class ModelfileError(InvalidRequest):
    """A Modelfile that does not parse; the message starts with `line N:` and `line` holds N."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(f"line {line}: {message}", field="modelfile")
        self.line = line


class ContextLengthExceeded(InvalidRequest):
    """The input needs more tokens than the context window holds."""

    def __init__(self, n_tokens: int, n_ctx: int, *, field: str | None = None) -> None:
        super().__init__(
            f"the input is {n_tokens} tokens, longer than the context window of {n_ctx} tokens", field=field
        )
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx

    def __str__(self) -> str:
        text = f"the input is {self.n_tokens} tokens, longer than the context window of {self.n_ctx} tokens"
        return f"{self.field}: {text}" if self.field else text


class PromptTooLong(ContextLengthExceeded):
    """A prompt with more bytes than its context window can hold at any tokenization (limits.BYTES_PER_TOKEN)."""

    def __init__(
        self, n_bytes: int, n_ctx: int, per_token: int, *, field: str | None = None, rendered: bool = False
    ) -> None:
        super().__init__(0, n_ctx, field=field)
        self.n_bytes = n_bytes
        self.per_token = per_token
        self.rendered = rendered  # the chat template's output passed `n_bytes` (it was stopped there)

    def __str__(self) -> str:
        size = (
            f"the rendered prompt passed {self.n_bytes} bytes"
            if self.rendered
            else f"the input is {self.n_bytes} bytes"
        )
        text = (
            f"{size}, more than a context window of {self.n_ctx} tokens can hold "
            f"(at most {self.per_token} bytes a token; options.num_ctx sets the window)"
        )
        return f"{self.field}: {text}" if self.field else text


class ModelNotFound(LocalLLMError, LookupError):
    """No model of that name in the store (or no such repository or file on the Hub)."""


class ConfigError(LocalLLMError, ValueError):
    """A configuration value that does not parse; the message names the variable."""


class ServerBusy(LocalLLMError):
    """Too many requests are waiting; try again later."""


EngineFailure = Literal["out_of_memory", "load", "crash", "hang", "engine", "worker"]


class EngineError(LocalLLMError):
    """The model runner failed: it could not load the model, or it died while serving.

    `kind` says how, set where it happened: "out_of_memory" (llama.cpp could not allocate), "load" (the model
    did not load for another reason), "crash" (the runner died), "hang" (it made no progress and was
    stopped), "engine" (llama.cpp failed while computing) or "worker" (an RPC worker the model is split across
    is unreachable or stopped answering)."""

    def __init__(self, message: str, *, kind: EngineFailure = "engine") -> None:
        super().__init__(message)
        self.kind: EngineFailure = kind


class DownloadError(LocalLLMError):
    """A pull failed: the Hub could not be reached, or a file did not match its checksum."""


class StoreUnwritable(LocalLLMError):
    """The model store refused a write (a pull, a create, a blob upload): its disk is full, or it is read-only.
    The message names the store."""


class AccessDenied(LocalLLMError):
    """The request may not be served: authentication, the Host/Origin checks, or a quota said no."""


class Unauthorized(AccessDenied):
    """No API key was sent, or a wrong one, or an access token that is forged or expired."""


class Forbidden(AccessDenied):
    """A Host or Origin header this daemon does not answer (DNS rebinding, cross-site browsers)."""


class QuotaExceeded(AccessDenied):
    """The key's daily token quota is used up; `retry_after` is the number of seconds to the next UTC day."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientError(LocalLLMError):
    """Raised by the HTTP client of the daemon."""


class ResponseError(ClientError):
    """The daemon answered with an error status or an error line."""

    def __init__(self, message: str, status_code: int = -1) -> None:
        super().__init__(message)
        self.error = message
        self.status_code = status_code


class DaemonNotRunning(ClientError):
    """Nothing answers at the daemon's address."""
