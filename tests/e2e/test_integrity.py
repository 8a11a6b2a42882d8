"""The store survives what happens to pulls: a daemon killed mid-download, concurrent pulls, a broken file on
the Hub, a crafted manifest. Real daemons, the Hub stand-in, the real huggingface_hub download path."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localllm.domain.names import parse_name

from ..hubstub import HubStub
from .conftest import Daemon, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

REPO = "testorg/integrity-GGUF"
BROKEN = "testorg/broken-GGUF"


BIG = "testorg/big-GGUF"


def big_gguf(path: Path, size: int) -> Path:
    """A valid GGUF of about `size` bytes (huggingface_hub writes 10 MiB chunks: a resume needs more)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("pad", np.random.default_rng(0).standard_normal(size // 4).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def stub(stories_gguf: Path, tmp_path: Path) -> Iterator[HubStub]:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(stories_gguf.read_bytes()[: 200 * 1024])
    repos = {
        REPO: {"stories260K.gguf": stories_gguf},
        BROKEN: {"broken.gguf": truncated},
        BIG: {"big.gguf": big_gguf(tmp_path / "big.gguf", 12 << 20)},
    }
    with HubStub(repos) as hub:
        yield hub


def pull(daemon: Daemon, repo: str, timeout: float = 120) -> httpx.Response:
    return httpx.post(daemon.url + "/api/pull", json={"model": f"hf.co/{repo}", "stream": False}, timeout=timeout)


def listed(daemon: Daemon) -> set[str]:
    return {m["name"] for m in httpx.get(daemon.url + "/api/tags").json()["models"]}


def test_a_daemon_killed_mid_pull_resumes_with_a_range_request(stub: HubStub, tmp_path: Path) -> None:
    stub.stall_after_bytes = 11 << 20
    first = start_daemon(tmp_path, stub)
    answer: list[httpx.Response | BaseException] = []

    def go() -> None:
        try:
            answer.append(pull(first, BIG, timeout=90))
        except BaseException as exc:
            answer.append(exc)

    puller = threading.Thread(target=go)
    puller.start()
    try:
        assert stub.stalled.wait(60), "the download never started"
        partial = next((tmp_path / "models" / "blobs").glob("*.partial"))
        deadline = time.monotonic() + 30
        while partial.stat().st_size < 10 << 20 and time.monotonic() < deadline:  # the first chunk lands
            time.sleep(0.05)
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    finally:
        stub.release.set()
        puller.join(30)
    assert answer and isinstance(answer[0], httpx.HTTPError), "the client saw the daemon go"
    again = start_daemon(tmp_path, stub)  # same store, same Hugging Face cache
    try:
        assert f"hf.co/{BIG}:latest" not in listed(again), "a half-pulled model is never listed"
        r = pull(again, BIG)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        starts = [int(m.group(1)) for raw in stub.range_log if (m := re.fullmatch(r"bytes=(\d+)-\d*", raw))]
        assert any(start >= 10 << 20 for start in starts), f"no Range request past 0: {stub.range_log}"
        assert stub.downloads("big.gguf") == 2, "the second pull fetched only the rest"
        assert f"hf.co/{BIG}:latest" in listed(again)
    finally:
        stop_daemon(again)


def test_concurrent_pulls_of_one_model_download_once(stub: HubStub, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, stub)
    try:
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: results.append(pull(daemon, REPO))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [r.status_code for r in results] == [200, 200, 200]
        assert stub.downloads("stories260K.gguf") == 1
        assert f"hf.co/{REPO}:latest" in listed(daemon)
    finally:
        stop_daemon(daemon)


def test_a_truncated_gguf_is_refused_at_pull_and_never_listed(stub: HubStub, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, stub)
    try:
        r = pull(daemon, BROKEN)
        assert r.status_code == 502 and "not a valid GGUF" in r.json()["error"], r.text
        assert f"hf.co/{BROKEN}:latest" not in listed(daemon)
        assert httpx.get(daemon.url + "/").status_code == 200
    finally:
        stop_daemon(daemon)


def test_a_manifest_naming_a_path_as_digest_is_refused(stub: HubStub, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, stub)
    try:
        evil = daemon.models_dir.joinpath("manifests", *parse_name("evil").parts())
        evil.parent.mkdir(parents=True, exist_ok=True)
        layer = {"mediaType": "application/vnd.ollama.image.model", "digest": "../../x", "size": 1}
        evil.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))
        assert "evil:latest" not in listed(daemon)
        for path, body in (("/api/show", {"model": "evil"}), ("/api/generate", {"model": "evil", "prompt": "hi"})):
            r = httpx.post(daemon.url + path, json=body, timeout=30)
            assert r.status_code == 400 and "digest" in r.json()["error"], r.text
        r = httpx.request("DELETE", daemon.url + "/api/delete", json={"model": "evil"}, timeout=30)
        assert r.status_code in (200, 400)
        assert httpx.get(daemon.url + "/").status_code == 200
    finally:
        stop_daemon(daemon)
    assert not (tmp_path / "x").exists() and not (daemon.models_dir / "x").exists()


def test_a_hung_runner_is_stopped_and_its_request_told(stub: HubStub, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, stub, LOCALLLM_RUNNER_TIMEOUT="2s")
    try:
        assert pull(daemon, REPO).status_code == 200
        body = {"model": f"hf.co/{REPO}", "prompt": "Once upon a time", "options": {"num_predict": 100000}}
        with httpx.stream("POST", daemon.url + "/api/generate", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["done"] is False
            pids = daemon.runner_pids()
            assert pids
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)  # alive, but no progress at all
            started = time.monotonic()
            rest = [json.loads(line) for line in lines if line.strip()]
        assert "no progress" in rest[-1]["error"], rest[-1]
        assert time.monotonic() - started < 20
        again = httpx.post(daemon.url + "/api/generate", json={**body, "stream": False, "options": {"num_predict": 4}})
        assert again.status_code == 200 and again.json()["eval_count"] == 4
    finally:
        stop_daemon(daemon)


def test_deleting_a_model_in_use_lets_its_request_finish(stub: HubStub, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, stub)
    try:
        assert pull(daemon, REPO).status_code == 200
        name = f"hf.co/{REPO}"
        body = {"model": name, "prompt": "Once upon a time", "options": {"num_predict": 300, "temperature": 0}}
        with httpx.stream("POST", daemon.url + "/api/generate", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["done"] is False
            gone = httpx.request("DELETE", daemon.url + "/api/delete", json={"model": name}, timeout=30)
            assert gone.status_code == 200
            rest = [json.loads(line) for line in lines if line.strip()]
        assert rest[-1]["done"] is True and "error" not in rest[-1], rest[-1]
        assert f"{name}:latest" not in listed(daemon)
        after = httpx.post(daemon.url + "/api/generate", json={**body, "stream": False}, timeout=30)
        assert after.status_code == 404
        assert not list(daemon.models_dir.joinpath("blobs").glob("sha256-*")), "its blob went with it"
    finally:
        stop_daemon(daemon)


def test_verify_finds_a_damaged_blob_the_model_lists_as_damaged_and_a_pull_repairs_it(
    stub: HubStub, tmp_path: Path
) -> None:
    daemon = start_daemon(tmp_path, stub)
    try:
        assert pull(daemon, REPO).status_code == 200
        clean = daemon.cli("verify")
        assert clean.returncode == 0 and "1 blobs verified, none damaged" in clean.stdout, clean.stderr
        (blob,) = (daemon.models_dir / "blobs").glob("sha256-*")
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit rots in the middle of the weights: the header still reads
        blob.write_bytes(bytes(data))

        found = daemon.cli("verify", f"hf.co/{REPO}")
        assert found.returncode == 1, found.stdout
        assert f"DAMAGED  {blob.name.removeprefix('sha256-')[:12]}" in found.stdout
        assert f"1 damaged model(s): hf.co/{REPO}:latest" in found.stderr
        assert f"{blob.name}.damaged" in found.stdout and "is damaged" in daemon.log()
        listed = daemon.cli("list")
        assert f"hf.co/{REPO}:latest (damaged)".lower() in listed.stdout.lower()
        assert "failed its sha256 check" in listed.stderr

        assert pull(daemon, REPO).status_code == 200  # the blob is fetched again
        assert daemon.cli("verify").returncode == 0
        assert "(damaged)" not in daemon.cli("list").stdout
        r = httpx.post(
            daemon.url + "/api/generate",
            json={"model": f"hf.co/{REPO}", "prompt": "Once", "stream": False, "options": {"num_predict": 2}},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    finally:
        stop_daemon(daemon)
