"""Stored responses on disk (`LOCALLLM_RESPONSES_DIR`): read back by a new store, bounded and expiring there as in
memory, and a file that does not read back removed, never served."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from localllm.auth.principal import Principal, acting_as
from localllm.domain.messages import ChatMessage, ToolCall
from localllm.service.responses_store import ResponseStore

CALL = ToolCall("call_1", "get_weather", {"city": "Paris"})
CONVERSATION = (
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", (CALL,), thinking="they want the weather"),
    ChatMessage("tool", "sunny", tool_call_id="call_1"),
    ChatMessage("assistant", "It is sunny."),
)


def response(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"resp_{n:032x}", "object": "response", "output": [], **extra}


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_new_store_reads_back_the_responses_and_their_conversations(tmp_path: Path) -> None:
    first = ResponseStore(directory=tmp_path)
    assert first.put(response(1, note="é"), CONVERSATION)
    assert files(tmp_path) == [f"{response(1)['id']}.json"]
    again = ResponseStore(directory=tmp_path)
    stored = again.get(response(1)["id"])
    assert stored is not None and stored.response == response(1, note="é") and stored.conversation == CONVERSATION
    assert again.bytes == first.bytes == stored.size == (tmp_path / f"{response(1)['id']}.json").stat().st_size
    assert ResponseStore().get(response(1)["id"]) is None, "without a directory nothing is read"


def test_delete_and_the_bounds_remove_the_files(tmp_path: Path) -> None:
    store = ResponseStore(directory=tmp_path, max_count=2)
    for n in range(3):
        store.put(response(n), CONVERSATION)
    assert files(tmp_path) == sorted(f"{response(n)['id']}.json" for n in (1, 2)), "the oldest went first"
    assert store.delete(response(2)["id"]) and files(tmp_path) == [f"{response(1)['id']}.json"]
    assert not store.delete(response(2)["id"])


def test_at_start_the_newest_files_within_the_bounds_are_read_and_the_rest_removed(tmp_path: Path) -> None:
    store = ResponseStore(directory=tmp_path)
    for n in range(4):
        store.put(response(n), CONVERSATION)
    paths = [tmp_path / f"{response(n)['id']}.json" for n in range(4)]
    for n, path in enumerate(paths):  # the file times say which is newest
        os.utime(path, (1000 + n, 1000 + n))
    size = paths[2].stat().st_size + paths[3].stat().st_size
    small = ResponseStore(directory=tmp_path, max_count=3, max_bytes=size)
    assert len(small) == 2 and [small.get(response(n)["id"]) is not None for n in range(4)] == [0, 0, 1, 1]
    assert files(tmp_path) == sorted(f"{response(n)['id']}.json" for n in (2, 3))


def test_expiry_holds_on_disk(tmp_path: Path) -> None:
    now = [1000.0]
    store = ResponseStore(directory=tmp_path, ttl=10, clock=lambda: now[0])
    store.put(response(1), CONVERSATION)
    now[0] += 5
    assert ResponseStore(directory=tmp_path, ttl=10, clock=lambda: now[0]).get(response(1)["id"]) is not None
    now[0] += 6
    assert len(ResponseStore(directory=tmp_path, ttl=10, clock=lambda: now[0])) == 0
    assert files(tmp_path) == [], "an expired file is removed when it is found"


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"\x00\xff" + data,  # not JSON
        lambda data: json.dumps({"expires": 1e12, "response": [], "conversation": []}).encode(),  # wrong shape
        lambda data: data.replace(b"resp_", b"resp_f"),  # another response's id
        lambda data: data.replace(b'"role":"user"', b'"role":7'),  # a message of the wrong shape
        lambda data: b"",
    ],
)
def test_a_file_that_does_not_read_back_is_removed_never_served(tmp_path: Path, damage: Any) -> None:
    ResponseStore(directory=tmp_path).put(response(1), CONVERSATION)
    path = tmp_path / f"{response(1)['id']}.json"
    path.write_bytes(damage(path.read_bytes()))
    (tmp_path / "notes.txt").write_text("not ours")
    (tmp_path / f".{response(2)['id']}.0a0b0c0d.partial").write_text('{"exp')  # a write cut short
    store = ResponseStore(directory=tmp_path)
    assert store.get(response(1)["id"]) is None and len(store) == 0
    assert files(tmp_path) == ["notes.txt"], "damaged and partial files removed; other files left alone"


def test_a_response_written_by_another_daemon_sharing_the_directory_is_found(tmp_path: Path) -> None:
    one, other = ResponseStore(directory=tmp_path), ResponseStore(directory=tmp_path)
    one.put(response(1), CONVERSATION)
    stored = other.get(response(1)["id"])
    assert stored is not None and stored.conversation == CONVERSATION and len(other) == 1
    one.put(response(2), CONVERSATION)
    assert other.delete(response(2)["id"]) and files(tmp_path) == [f"{response(1)['id']}.json"]
    assert other.get("../../etc/passwd") is None and other.get("") is None, "only ids name files"


def test_a_directory_that_cannot_be_made_leaves_the_store_in_memory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    store = ResponseStore(directory=tmp_path / "file" / "responses")
    assert store.directory is None and store.put(response(1), CONVERSATION)
    assert store.get(response(1)["id"]) is not None


def test_a_response_that_cannot_be_written_is_kept_in_memory(tmp_path: Path) -> None:
    store = ResponseStore(directory=tmp_path)
    (tmp_path / f"{response(1)['id']}.json" / "in the way").mkdir(parents=True)  # its file cannot be put in place
    assert store.put(response(1), CONVERSATION) and store.get(response(1)["id"]) is not None
    assert files(tmp_path) == [f"{response(1)['id']}.json"], "no partial file left behind"


def test_a_response_belongs_to_the_principal_that_stored_it(tmp_path: Path) -> None:
    a, b = Principal("key-a", "a"), Principal("key-b", "b")
    store = ResponseStore(directory=tmp_path)
    rid = response(1)["id"]
    with acting_as(a):
        assert store.put(response(1), CONVERSATION)
    for other in (b, None):  # another key, or no key (authentication turned off later)
        with acting_as(other) if other is not None else contextlib.nullcontext():
            assert store.get(rid) is None
            assert not store.delete(rid)
    with acting_as(b):  # a daemon sharing the directory reads the owner back from the file
        assert ResponseStore(directory=tmp_path).get(rid) is None
    with acting_as(a):
        assert ResponseStore(directory=tmp_path).get(rid) is not None
        stored = store.get(rid)
        assert stored is not None and stored.owner == "key-a"
        assert store.delete(rid) and store.get(rid) is None
