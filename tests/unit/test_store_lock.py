"""The store's lock (issue 18, item 1): pruning waits for no pull, it skips while blobs are being added."""

from __future__ import annotations

import hashlib
from pathlib import Path

from localllm.modelstore.store import Store


def plant(store: Store, text: str) -> Path:
    store.ensure()
    data = text.encode()
    blob = store.blobs_dir / f"sha256-{hashlib.sha256(data).hexdigest()}"
    blob.write_bytes(data)
    return blob


def test_prune_leaves_blobs_alone_while_a_pull_adds_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    blob = plant(store, "a blob its pull has not yet named in a manifest")
    with store.adding():
        assert Store(store.root).prune() == []
        assert blob.exists()
    assert Store(store.root).prune() == [blob.name]
    assert not blob.exists()


def test_attach_prunes_only_when_no_other_daemon_holds_the_store(tmp_path: Path) -> None:
    """flock locks belong to open files, so two Stores in one process stand for two daemons."""
    root = tmp_path / "models"
    first = Store(root)
    early = plant(first, "unused before any daemon")
    assert first.attach() == [early.name]
    blob = plant(first, "unused, planted while the first daemon serves")
    second = Store(root)
    assert second.attach() is None  # the first still holds the store
    assert blob.exists()
    second.detach()
    first.detach()
    assert Store(root).attach() == [blob.name]
