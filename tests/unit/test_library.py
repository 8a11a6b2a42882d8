"""The model library: every shipped Modelfile parses and names a real GGUF on the Hub; lookups by short name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from localllm.domain.errors import InvalidModelName, ModelfileError
from localllm.domain.names import DEFAULT_HOST, parse_name
from localllm.modelstore import library

from ..conftest import ROOT

LIBRARY = ROOT / "modelfiles"
QUANT = re.compile(r"I?Q\d+(?:_[A-Z0-9]+)*|BF16|F16|F32", re.IGNORECASE)


def test_the_checkout_library_is_found() -> None:
    assert library.library_dir() == LIBRARY


def test_every_library_file_parses_and_names_a_hub_gguf_with_a_quant() -> None:
    entries = library.entries()
    assert len(entries) >= 30
    files = sorted(f for f in LIBRARY.glob("*/*") if f.parent.name != "__pycache__")
    assert all(f.name.endswith(library.SUFFIX) for f in files), "only <name>/<tag>.Modelfile in modelfiles/"
    assert len(files) == len(entries)
    for name, mf in entries:
        ref = parse_name(name)
        assert ref.host == DEFAULT_HOST and ref.namespace == "library", name
        assert str(ref) == name
        source = parse_name(mf.from_)
        assert source.is_hf, f"{name}: FROM {mf.from_} is not hf.co/<user>/<repo>:<quant>"
        assert mf.from_.startswith("hf.co/"), name
        assert QUANT.fullmatch(source.tag), f"{name}: FROM {mf.from_} has no quant tag"
        assert mf.template is None, f"{name}: the GGUF's own chat template is the one to use"


def test_library_names_are_unique_and_latest_is_an_alias() -> None:
    entries = library.entries()
    names = [name.casefold() for name, _ in entries]
    assert len(names) == len(set(names))
    by_from: dict[str, list[str]] = {}
    for name, mf in entries:
        by_from.setdefault(mf.from_.casefold(), []).append(name)
    for source, users in by_from.items():
        tags = sorted(name.partition(":")[2] for name in users)
        assert len([t for t in tags if t != "latest"]) == 1, f"{source} is in the library under {users}"
    models = {name.partition(":")[0] for name, _ in entries}
    for model in models:
        latest = LIBRARY / model / "latest.Modelfile"
        if latest.exists():
            twins = [p for p in (LIBRARY / model).iterdir() if p != latest and p.read_text() == latest.read_text()]
            assert len(twins) == 1, f"{model}:latest should be a copy of exactly one other tag"


def test_find_by_short_name() -> None:
    mf = library.find("qwen2.5:0.5b")
    assert mf is not None and mf.from_ == "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert mf.parameters["temperature"] == 0.7
    assert library.find("QWEN2.5:0.5B") == mf
    assert library.find(parse_name("qwen2.5:0.5b")) == mf
    assert library.find("smollm2:135m") == library.find("library/smollm2:135m")
    latest = library.find("qwen2.5")
    assert latest is not None and latest == library.find("qwen2.5:7b")


def test_find_says_none_for_names_outside_the_library() -> None:
    assert library.find("qwen2.5:999b") is None
    assert library.find("no-such-model") is None
    assert library.find("someone/qwen2.5:0.5b") is None
    assert library.find("hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF") is None
    with pytest.raises(InvalidModelName):
        library.find("../etc:passwd")


def test_entries_and_find_in_another_folder(tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "1m.Modelfile").write_text("FROM hf.co/a/b:Q8_0\n")
    (tmp_path / "tiny" / "10m.Modelfile").write_text("FROM hf.co/a/c:Q8_0\n")
    (tmp_path / "tiny" / "latest.Modelfile").write_text("FROM hf.co/a/c:Q8_0\n")
    (tmp_path / "tiny" / "notes.txt").write_text("not a Modelfile")
    names = [name for name, _ in library.entries(root=tmp_path)]
    assert names == ["tiny:latest", "tiny:1m", "tiny:10m"]
    found = library.find("Tiny:1M", root=tmp_path)
    assert found is not None and found.from_ == "hf.co/a/b:Q8_0"
    assert library.find("tiny:notes", root=tmp_path) is None


def test_a_broken_library_file_names_itself(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "latest.Modelfile").write_text("FROM hf.co/a/b:Q8_0\nPARAMETER temperature hot\n")
    with pytest.raises(ModelfileError) as info:
        library.find("bad", root=tmp_path)
    assert str(info.value).startswith("line 2: parameter 'temperature' must be a number")
    assert "latest.Modelfile" in str(info.value)
