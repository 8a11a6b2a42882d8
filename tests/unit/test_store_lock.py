"""The store's lock (issue 18, item 1): pruning waits for no pull, it skips while blobs are being added."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
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


# -- one downloader per blob (issue 26, item 1) ----------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def test_a_blob_lock_has_one_holder_across_threads_and_goes_with_its_holder(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    store.ensure()
    first, second = store.blob_lock(DIGEST), Store(store.root).blob_lock(DIGEST)
    assert first.acquire()
    assert first.path.name == "sha256-" + "ab" * 32 + ".lock"
    won: list[bool] = []
    other = threading.Thread(target=lambda: won.append(second.acquire()))
    other.start()
    other.join()
    assert won == [False]  # another thread of the same process is kept out too
    first.release()
    assert not first.path.exists(), "the holder removes the lock file as it lets go"
    assert second.acquire()
    second.release()


def test_a_waiter_that_opened_a_removed_lock_file_does_not_get_a_second_lock(tmp_path: Path) -> None:
    """The holder removes the file as it lets go; a waiter holding the old file open must not own the blob
    beside whoever locks the new file."""
    store = Store(tmp_path / "models")
    store.ensure()
    holder = store.blob_lock(DIGEST)
    assert holder.acquire()
    stale = os.open(holder.path, os.O_RDWR)  # a waiter that opened the file before it went
    holder.release()
    fresh = store.blob_lock(DIGEST)
    assert fresh.acquire()
    try:
        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it gets a lock, on a file no longer there ...
        late = store.blob_lock(DIGEST)
        assert not late.acquire()  # ... and BlobLock, opening the path anew, sees the fresh holder
    finally:
        os.close(stale)
        fresh.release()
