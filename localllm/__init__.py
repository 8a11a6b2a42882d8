"""localllm: a local LLM daemon with Ollama's and OpenAI's APIs over llama.cpp."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
