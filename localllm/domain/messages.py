"""A conversation's words: chat messages, the tools a request declares, and the calls a model makes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .media import Media

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # what an assistant message asked for
    tool_call_id: str | None = None  # which call a tool message answers
    thinking: str = ""  # an assistant message's reasoning (Ollama's `thinking`, OpenAI's `reasoning_content`)
    media: tuple[Media, ...] = ()  # its images and audio, one per `media.MARKER` in `content`, in order


@dataclass(frozen=True)
class Tool:
    """A function a chat model may call; `parameters` is a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The shape chat templates (and OpenAI) take: `{"type": "function", "function": {...}}`."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The shape chat templates take (arguments as an object)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def arguments_json(self) -> str:
        """The arguments as the APIs send them: JSON text (what a stream's argument pieces add up to)."""
        return arguments_json(self.arguments)


def arguments_json(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)
