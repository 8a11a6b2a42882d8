"""What both tiers share: the repository's root, the real test models and the repositories a Hub stand-in serves.

The tiers: tests/unit (no llama.cpp, no process: `scripts/test unit`) and tests/e2e (a real daemon, real models,
real clients; its conftest starts daemons). Support modules: fakes.py (a scripted runner for the unit tier),
hubstub.py (the Hub stand-in), ggufcopy.py (GGUF files with other metadata), mediamodels.py (the tiny vision
and audio model made here, PNG and WAV makers: fixtures `tiny_vlm`, `tiny_vlm_audio`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .ggufcopy import copy_with_metadata
from .hubstub import HubStub
from .mediamodels import VisionModel, write_vision_model
from .testmodels import models_dir

ROOT = Path(__file__).resolve().parent.parent
MODELS = models_dir()
MISSING_MODEL = "test model "  # how the skip reason of a test whose model is missing begins

# A template that passes the user's text through, so the story model continues it (and we can tell
# that the template, not the plain fallback, shaped the prompt).
STORY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n"
    "{% else %}{{ m.content }}{% endif %}{% endfor %}"
)

# A JSON schema small enough that a grammar-constrained answer of stories260K always completes it.
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}

# Repositories the Hub stand-in serves: repo id -> {file name on the Hub: file on disk}.
STORIES_REPO = "testorg/stories260K-GGUF"
CHAT_REPO = "testorg/stories260K-chat-GGUF"
TINY_REPO = "testorg/tiny-random-GGUF"
EMBED_REPO = "testorg/all-MiniLM-L6-v2-GGUF"  # a real sentence-embedding model (BERT, 384-dim, mean pooling)
EMBED_FILE = "all-minilm-l6-v2-f16.gguf"
FIM_REPO = "testorg/stories260K-fim-GGUF"


def model_file(name: str) -> Path:
    path = MODELS / name
    if not path.is_file():
        pytest.skip(
            f"{MISSING_MODEL}{name} not found in {MODELS} (fetch them with scripts/test-models, or set "
            "LOCALLLM_TEST_MODELS to the models folder)"
        )
    return path


def pytest_sessionfinish(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    session.config.stash[_MISSING] = sum(1 for report in skipped if MISSING_MODEL in str(report.longrepr))


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary, one loud line when tests skipped for want of the test models."""
    missing = config.stash.get(_MISSING, 0)
    if missing:
        line = (
            f"!!! {missing} tests were SKIPPED because the test models are missing from {MODELS}: "
            "fetch them with scripts/test-models (or set LOCALLLM_TEST_MODELS to a folder holding them) !!!"
        )
        sys.stdout.write(f"\n\033[1;31m{line}\033[0m\n" if sys.stdout.isatty() else f"\n{line}\n")
        sys.stdout.flush()


_MISSING = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def stories_gguf() -> Path:
    return model_file("stories260K.gguf")


@pytest.fixture(scope="session")
def stories_chat_gguf(tmp_path_factory: pytest.TempPathFactory, stories_gguf: Path) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "stories260K-chat.gguf"
    return copy_with_metadata(stories_gguf, out, {"tokenizer.chat_template": STORY_TEMPLATE})


@pytest.fixture(scope="session")
def stories_fim_gguf(tmp_path_factory: pytest.TempPathFactory, stories_gguf: Path) -> Path:
    """stories260K told that <s>, </s> and <unk> are its fill-in-the-middle tokens (prefix, suffix, middle)."""
    out = tmp_path_factory.mktemp("gguf") / "stories260K-fim.gguf"
    fim: dict[str, str | int] = {
        "tokenizer.ggml.fim_pre_token_id": 1,
        "tokenizer.ggml.fim_suf_token_id": 2,
        "tokenizer.ggml.fim_mid_token_id": 0,
    }
    return copy_with_metadata(stories_gguf, out, fim)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> VisionModel:
    """The tiny vision model made here (mediamodels.py): `.model` and `.projector` (images only)."""
    tokenizer = model_file("llama-2-tiny-random.gguf")
    return write_vision_model(tokenizer, tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="session")
def tiny_vlm_audio(tmp_path_factory: pytest.TempPathFactory) -> VisionModel:
    """The tiny vision model with a projector that takes audio too (mediamodels.py)."""
    tokenizer = model_file("llama-2-tiny-random.gguf")
    return write_vision_model(tokenizer, tmp_path_factory.mktemp("vlm-audio"), audio=True)


@pytest.fixture(scope="session")
def hub(stories_gguf: Path, stories_chat_gguf: Path, stories_fim_gguf: Path) -> Iterator[HubStub]:
    repos = {
        STORIES_REPO: {"stories260K.gguf": stories_gguf},
        CHAT_REPO: {"stories260K-chat-F32.gguf": stories_chat_gguf},
        FIM_REPO: {"stories260K-fim-F32.gguf": stories_fim_gguf},
    }
    tiny = MODELS / "llama-2-tiny-random.gguf"
    if tiny.is_file():
        repos[TINY_REPO] = {"llama-2-tiny-random.F16.gguf": tiny}
    minilm = MODELS / EMBED_FILE
    if minilm.is_file():
        repos[EMBED_REPO] = {"all-MiniLM-L6-v2-F16.gguf": minilm}
    with HubStub(repos) as stub:
        yield stub
