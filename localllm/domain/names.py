"""Model references: `name[:tag]`, `namespace/name[:tag]` and `hf.co/<user>/<repo>[:<tag>]`.

A reference is validated here before it can ever become a path: each part is made of letters, digits,
`-`, `_` and `.`, never `.` or `..` alone, never empty, and the whole has a fixed number of parts.

    name                 -> localllm / library / name  : latest
    user/name:tag        -> localllm / user    / name  : tag
    hf.co/user/repo:Q8_0 -> hf.co    / user    / repo  : Q8_0
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidModelName

DEFAULT_HOST = "localllm"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
HF_HOST = "hf.co"
_HF_ALIASES = {"hf.co", "huggingface.co", "www.huggingface.co"}

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,95}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model reference."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def is_hf(self) -> bool:
        return self.host == HF_HOST

    @property
    def repo_id(self) -> str:
        """The Hugging Face repository id (`user/repo`)."""
        return f"{self.namespace}/{self.model}"

    @property
    def tag_is_default(self) -> bool:
        return self.tag == DEFAULT_TAG

    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def key(self) -> tuple[str, str, str, str]:
        """The case-insensitive identity of the name."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def __str__(self) -> str:
        """The shortest form that parses back to the same name."""
        if self.host == DEFAULT_HOST:
            base = self.model if self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}/{self.model}"
        else:
            base = f"{self.host}/{self.namespace}/{self.model}"
        return f"{base}:{self.tag}"


def _check(part: str, what: str, raw: str, pattern: re.Pattern[str] = _PART) -> str:
    if not part:
        raise InvalidModelName(f"invalid model name {raw!r}: the {what} is empty")
    if part in {".", ".."} or ".." in part or not pattern.match(part):
        raise InvalidModelName(
            f"invalid model name {raw!r}: the {what} {part!r} may hold only letters, digits, '-', '_' and '.'"
        )
    return part


def parse_name(raw: object, *, field: str = "model") -> ModelName:
    """Parse and validate a model reference; raise `InvalidModelName` naming `field` when it is bad."""
    if not isinstance(raw, str):
        raise InvalidModelName(f"{field} must be a string", field=field)
    text = raw.strip()
    if not text:
        raise InvalidModelName(f"{field} is required", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in text) or "\\" in text or len(text) > 350:
        raise InvalidModelName(f"invalid model name {raw!r}", field=field)
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    try:
        base, tag = _split_tag(text)
        parts = base.split("/")
        if len(parts) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, namespace, model = DEFAULT_HOST, parts[0], parts[1]
        elif len(parts) == 3:
            host, namespace, model = parts
            if host.lower() in _HF_ALIASES:
                host = HF_HOST
            elif host.lower() != DEFAULT_HOST:
                raise InvalidModelName(
                    f"invalid model name {raw!r}: only hf.co/<user>/<repo> names are pulled from a remote"
                )
            else:
                host = DEFAULT_HOST
        else:
            raise InvalidModelName(f"invalid model name {raw!r}: too many '/'-separated parts")
        return ModelName(
            host=host,
            namespace=_check(namespace, "namespace", raw),
            model=_check(model, "model name", raw),
            tag=_check(tag, "tag", raw, _TAG),
        )
    except InvalidModelName as exc:
        exc.field = field
        raise


def _split_tag(text: str) -> tuple[str, str]:
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1 :]
    return text, DEFAULT_TAG


def close_match(name: ModelName, candidates: Iterable[ModelName]) -> ModelName | None:
    """The one `hf.co/<user>/<repo>` model a short name most likely means, or None (none, or several).

    `SmolLM2-135M-Instruct-GGUF` (or `bartowski/SmolLM2-135M-Instruct-GGUF`, any case) matches
    `hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:<tag>`; a tag given must match too.
    """
    if name.is_hf:
        return None
    short = name.host == DEFAULT_HOST and name.namespace == DEFAULT_NAMESPACE
    found = {
        c
        for c in candidates
        if c.is_hf
        and c.model.lower() == name.model.lower()
        and (short or c.namespace.lower() == name.namespace.lower())
        and (name.tag_is_default or c.tag.lower() == name.tag.lower())
    }
    return found.pop() if len(found) == 1 else None


def display(name: ModelName) -> str:
    """The name as a user would type it: without the default tag."""
    return str(name).removesuffix(f":{DEFAULT_TAG}")
