"""A fresh clone and the test models (issue 18, item 7): `scripts/test-models` fetches the exact files through
huggingface_hub (here from the Hub stand-in) and checks their sha256; a run without them says so loudly."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT, model_file
from ..hubstub import HubStub
from ..testmodels import MODELS


def fetch(tmp_path: Path, repos: dict[str, dict[str, Path]]) -> subprocess.CompletedProcess[str]:
    with HubStub(repos) as hub:
        env = {
            **os.environ,
            "PYTHON": sys.executable,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
        env.pop("HF_HUB_OFFLINE", None)
        return subprocess.run(
            [str(ROOT / "scripts" / "test-models")], env=env, capture_output=True, text=True, timeout=300
        )


def test_test_models_fetches_checks_and_links_the_exact_files(tmp_path: Path) -> None:
    repos: dict[str, dict[str, Path]] = {}
    for model in MODELS:
        repos.setdefault(model.repo_id, {})[model.filename] = model_file(model.name)
    result = fetch(tmp_path, repos)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "cache" / "localllm" / "test-models"
    assert f"export LOCALLLM_TEST_MODELS={folder}" in result.stdout
    for model in MODELS:
        link = folder / model.name
        assert link.resolve().is_relative_to(tmp_path / "hf"), "the file lives in the Hugging Face cache"
        assert hashlib.sha256(link.read_bytes()).hexdigest() == model.sha256


def test_test_models_refuses_a_file_that_is_not_the_one_expected(tmp_path: Path) -> None:
    repos: dict[str, dict[str, Path]] = {}
    for model in MODELS:  # every file is stories260K: right for one, wrong for the others
        repos.setdefault(model.repo_id, {})[model.filename] = model_file("stories260K.gguf")
    result = fetch(tmp_path, repos)
    assert result.returncode == 1
    assert "llama-2-tiny-random.gguf: sha256 mismatch: expected 81f226c6" in result.stderr
    folder = tmp_path / "cache" / "localllm" / "test-models"
    assert (folder / "stories260K.gguf").exists() and not (folder / "llama-2-tiny-random.gguf").exists()


def test_a_run_without_the_models_ends_with_one_loud_line(tmp_path: Path) -> None:
    env = {**os.environ, "LOCALLLM_TEST_MODELS": str(tmp_path / "nothing-here")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_store_sharing.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout
    last = result.stdout.strip().splitlines()[-1]
    skipped = re.search(r"\b(\d+) tests were SKIPPED because the test models are missing", last)
    assert skipped and int(skipped.group(1)) == sum(map(int, re.findall(r"SKIPPED \[(\d+)\]", result.stdout))), last
    assert "scripts/test-models" in last


def fresh_clone(tmp_path: Path) -> Path:
    """What `scripts/test --setup` reads of a clone with no .venv and no ../shared beside it; its install.sh
    records its arguments and makes a .venv whose python is this one."""
    clone = tmp_path / "clone"
    for name in ("scripts/test", "scripts/test-models", "tests/__init__.py", "tests/testmodels.py"):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    install = clone / "install.sh"
    install.write_text(
        '#!/bin/sh\necho "$@" > install-args\nmkdir -p .venv/bin\n'
        f"printf '#!/bin/sh\\nexec {sys.executable} \"$@\"\\n' > .venv/bin/python\nchmod +x .venv/bin/python\n"
    )
    install.chmod(0o755)
    return clone


def setup_env(tmp_path: Path, hub_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHON", "LOCALLLM_TEST_MODELS", "HF_HUB_OFFLINE"}}
    return env | {
        "HF_ENDPOINT": hub_url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def test_scripts_test_sets_up_a_fresh_clone(tmp_path: Path) -> None:
    """No .venv: it runs install.sh as the README says; no test models anywhere: it fetches them (sha256 checked)
    where the tests then find them."""
    clone = fresh_clone(tmp_path)
    repos: dict[str, dict[str, Path]] = {}
    for model in MODELS:
        repos.setdefault(model.repo_id, {})[model.filename] = model_file(model.name)
    with HubStub(repos) as hub:
        env = setup_env(tmp_path, hub.url)
        result = subprocess.run(
            [str(clone / "scripts" / "test"), "--setup"], env=env, capture_output=True, text=True, timeout=300
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (clone / "install-args").read_text().split() == ["--dev", "--prefix", ".venv", "--no-link"]
    folder = tmp_path / "cache" / "localllm" / "test-models"
    assert all(hashlib.sha256((folder / m.name).read_bytes()).hexdigest() == m.sha256 for m in MODELS)
    check = [str(clone / ".venv" / "bin" / "python"), "-m", "tests.testmodels", "--check"]
    assert subprocess.run(check, cwd=clone, env=env, timeout=60).returncode == 0, "the tests find them"


def test_scripts_test_leaves_a_named_models_folder_alone_and_says_so_in_one_line(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path)
    env = setup_env(tmp_path, "http://127.0.0.1:9") | {"LOCALLLM_TEST_MODELS": str(tmp_path / "empty")}
    result = subprocess.run(
        [str(clone / "scripts" / "test"), "--setup"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"scripts/test: LOCALLLM_TEST_MODELS {tmp_path / 'empty'} lacks stories260K.gguf")
    assert "will skip" in line and not (tmp_path / "cache").exists()
