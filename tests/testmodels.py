"""The three real tiny models the tests use: where they come from on the Hugging Face Hub, and their sha256.

CI and the shared machines read them from `../shared/models`. A fresh clone fetches them with
`scripts/test-models`, which downloads each file through huggingface_hub (into its cache: HF_HOME, or
HF_HUB_CACHE), checks its sha256 and links it into `fetched_models_dir()`, where the tests find it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelFile:
    name: str  # the file name the tests look for
    repo_id: str  # where it is on the Hub
    filename: str  # its path in that repository
    sha256: str
    size: int


MODELS = (
    ModelFile(
        "stories260K.gguf",
        "ggml-org/models",
        "tinyllamas/stories260K.gguf",
        "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d",
        1185376,
    ),
    ModelFile(
        "llama-2-tiny-random.gguf",
        "ggml-org/models",
        "tinyllamas/llama-2-tiny-random.gguf",
        "81f226c62d28ed4a1a9b9fa080fcd9f0cc40e0f9d5680036583ff98fbcd035cb",
        1750560,
    ),
    ModelFile(
        "all-minilm-l6-v2-f16.gguf",
        "second-state/All-MiniLM-L6-v2-Embedding-GGUF",
        "all-MiniLM-L6-v2-ggml-model-f16.gguf",
        "7e01259cec4346ed6884939d130b8b103472ab310dc296a60cf1349d90e5541a",
        46226496,
    ),
)


def fetched_models_dir() -> Path:
    """Where scripts/test-models links the files: `$XDG_CACHE_HOME/localllm/test-models`."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "localllm" / "test-models"


def models_dir() -> Path:
    """The folder the tests read: LOCALLLM_TEST_MODELS, else ../shared/models, else what scripts/test-models
    fetched (the first that holds every model; ../shared/models when none does, so the skip reasons name it)."""
    explicit = os.environ.get("LOCALLLM_TEST_MODELS")
    if explicit:
        return Path(explicit).resolve()
    shared = (ROOT.parent / "shared" / "models").resolve()
    fetched = fetched_models_dir()
    if missing(shared) and not missing(fetched):
        return fetched
    return shared


def missing(folder: Path) -> list[str]:
    """The models `folder` lacks."""
    return [model.name for model in MODELS if not (folder / model.name).is_file()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(target: Path) -> list[str]:
    """Download every model through huggingface_hub, check its sha256 and link it into `target`; return the
    problems (empty when all is well)."""
    from huggingface_hub import hf_hub_download

    target.mkdir(parents=True, exist_ok=True)
    problems = []
    for model in MODELS:
        print(f"{model.name}: hf.co/{model.repo_id} {model.filename} ({model.size / 1e6:.1f} MB)", flush=True)
        try:
            cached = Path(hf_hub_download(model.repo_id, model.filename)).resolve()
        except Exception as exc:  # network, missing repository or file: say which, go on with the others
            problems.append(f"{model.name}: could not download {model.filename} from hf.co/{model.repo_id}: {exc}")
            continue
        actual = sha256_of(cached)
        if actual != model.sha256:
            problems.append(f"{model.name}: sha256 mismatch: expected {model.sha256}, got {actual} ({cached})")
            continue
        link = target / model.name
        link.unlink(missing_ok=True)
        link.symlink_to(cached)
    return problems


def check() -> int:
    """`--check` (scripts/test): 0 when the tests find every model, else 1 and one line saying what is missing."""
    folder = models_dir()
    gone = missing(folder)
    if gone:
        named = "LOCALLLM_TEST_MODELS" if os.environ.get("LOCALLLM_TEST_MODELS") else "the tests' models folder"
        print(f"{named} {folder} lacks {', '.join(gone)}", file=sys.stderr)
    return 1 if gone else 0


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    target = fetched_models_dir()
    problems = fetch(target)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"\nThe test models are in {target} (sha256 checked); the tests find them there.")
    print(f"To name the folder yourself: export LOCALLLM_TEST_MODELS={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
