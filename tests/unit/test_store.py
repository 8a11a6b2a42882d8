from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from localllm.domain.errors import InvalidRequest, ModelNotFound
from localllm.domain.names import parse_name
from localllm.modelstore.store import MEDIA_SYSTEM, Layer, Manifest, Store, check_digest


def blob_file(tmp_path: Path, data: bytes, name: str = "f.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_add_verify_and_list(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = blob_file(tmp_path, b"GGUF model bytes")
    digest = "sha256:" + hashlib.sha256(b"GGUF model bytes").hexdigest()
    layer = store.add_blob_file(src, digest)
    assert layer.digest == digest and layer.size == 16
    assert store.blob_path(digest).read_bytes() == b"GGUF model bytes"
    system = store.add_blob_bytes(b"be brief", MEDIA_SYSTEM)
    store.write_manifest(parse_name("m:v1"), Manifest((layer, system)))
    [model] = store.models()
    assert str(model.name) == "m:v1"
    assert store.read_blob_text(model.manifest.layer(MEDIA_SYSTEM)) == "be brief"
    assert store.model_path(model.manifest) == store.blob_path(digest)
    assert not list(store.blobs_dir.glob("*.partial"))


def test_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = blob_file(tmp_path, b"tampered")
    with pytest.raises(InvalidRequest, match="sha256 mismatch"):
        store.add_blob_file(src, "sha256:" + "0" * 64)
    assert list(store.blobs_dir.iterdir()) == []


def test_manifest_needs_its_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(RuntimeError, match="not in the store"):
        store.write_manifest(parse_name("m"), Manifest((Layer("x", "sha256:" + "a" * 64, 1),)))
    assert store.models() == []


@pytest.mark.parametrize("digest", ["../../etc/passwd", "sha256:../x", "sha256:" + "A" * 64, "md5:00", ""])
def test_digests_never_reach_a_path(tmp_path: Path, digest: str) -> None:
    with pytest.raises(InvalidRequest):
        Store(tmp_path).blob_path(digest)
    with pytest.raises(InvalidRequest):
        check_digest(digest)


def test_find_is_case_insensitive_copy_delete_prune(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    layer = store.add_blob_file(blob_file(tmp_path, b"weights"))
    store.write_manifest(parse_name("hf.co/User/Repo:Q8_0"), Manifest((layer,)))
    found = store.find(parse_name("hf.co/user/repo:q8_0"))
    assert found is not None and str(found.name) == "hf.co/User/Repo:Q8_0"
    store.copy(parse_name("hf.co/user/repo:q8_0"), parse_name("alias"))
    store.delete(parse_name("hf.co/User/Repo:Q8_0"))
    assert store.has_blob(layer.digest), "still used by the alias"
    store.delete(parse_name("alias"))
    assert not store.has_blob(layer.digest)
    with pytest.raises(ModelNotFound):
        store.get(parse_name("alias"))
    assert list(store.manifests_dir.iterdir()) == []


def test_prune_keeps_fresh_partials(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    orphan = store.blobs_dir / ("sha256-" + "b" * 64)
    orphan.write_bytes(b"x")
    fresh = store.blobs_dir / ("sha256-" + "c" * 64 + ".partial")
    fresh.write_bytes(b"x")
    stale = store.blobs_dir / ("sha256-" + "d" * 64 + ".partial")
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    removed = store.prune()
    assert sorted(removed) == sorted([orphan.name, stale.name])
    assert fresh.exists()


def test_split_models_get_llama_cpp_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    layers = tuple(store.add_blob_file(blob_file(tmp_path, f"shard {i}".encode(), f"s{i}")) for i in (1, 2))
    manifest = Manifest(layers)
    first = store.model_path(manifest)
    assert first.name == "model-00001-of-00002.gguf"
    assert (first.parent / "model-00002-of-00002.gguf").read_bytes() == b"shard 2"
