from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from localllm.domain.errors import DownloadError, InvalidRequest, ModelNotFound
from localllm.domain.events import Progress
from localllm.domain.names import parse_name
from localllm.modelstore.hub import choose_files, choose_projector, pull
from localllm.modelstore.store import MEDIA_MODEL, MEDIA_PROJECTOR, Store

from ..hubstub import HubStub
from ..projectors import write_projector
from ..testmodels import models_dir

MODELS = models_dir()
STORIES = MODELS / "stories260K.gguf"
ABSENT = f"test model stories260K.gguf not found in {MODELS} (fetch it with scripts/test-models)"
needs_stories = pytest.mark.skipif(not STORIES.is_file(), reason=ABSENT)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def statuses(events: list[Progress]) -> list[str]:
    out: list[str] = []
    for event in events:
        if not out or out[-1] != event.status:
            out.append(event.status)
    return out


def blobs(store: Store) -> list[Path]:
    return sorted(store.blobs_dir.glob("sha256-*")) if store.blobs_dir.is_dir() else []


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HF cache and no token, offline mode or cache override from the outer environment."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@contextmanager
def serve(
    monkeypatch: pytest.MonkeyPatch, repos: dict[str, dict[str, Path]], *, gated: dict[str, str] | None = None
) -> Iterator[HubStub]:
    with HubStub(repos, gated=gated) as stub:
        monkeypatch.setenv("HF_ENDPOINT", stub.url)
        yield stub


@pytest.fixture
def stories_hub(hf_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    if not STORIES.is_file():
        pytest.skip(ABSENT)
    readme = tmp_path / "README.md"
    readme.write_text("# stories\n")
    with serve(monkeypatch, {"tester/stories": {"stories260K.gguf": STORIES, "README.md": readme}}) as stub:
        yield stub


def fake_files(folder: Path, names: list[str], size: int = 50_000) -> dict[str, Path]:
    """Small valid GGUF files (a pull refuses anything else), each with its own content, about `size` bytes."""
    import numpy as np
    from gguf import GGUFWriter

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(names):
        path = folder / name.replace("/", "__")
        writer = GGUFWriter(str(path), "llama")
        writer.add_string("general.name", name)
        pad = np.frombuffer(hashlib.sha256(name.encode()).digest() * (size // 32 + i), dtype=np.float32)
        writer.add_tensor("pad", pad.copy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        out[name] = path
    return out


# -- choose_files ----------------------------------------------------------------------------------------

QUANTS = ["Model-Q8_0.gguf", "Model-Q4_K_M.gguf", "Model-F16.gguf", "README.md", ".gitattributes"]


def test_latest_is_q4_k_m() -> None:
    assert choose_files(QUANTS, "latest") == ["Model-Q4_K_M.gguf"]
    assert choose_files(QUANTS, "LATEST") == ["Model-Q4_K_M.gguf"]


def test_latest_is_the_only_gguf_ignoring_projectors_and_other_files() -> None:
    files = ["README.md", "stories260K.gguf", "mmproj-model-f16.gguf", "config.json"]
    assert choose_files(files, "latest") == ["stories260K.gguf"]


def test_latest_without_q4_k_m_among_several_lists_the_choices() -> None:
    with pytest.raises(InvalidRequest) as info:
        choose_files(["Model-Q8_0.gguf", "Model-F16.gguf", "Model-IQ4_XS.gguf"], "latest")
    assert info.value.field == "model"
    message = str(info.value)
    for tag in ("Q8_0", "F16", "IQ4_XS"):
        assert tag in message


def test_quant_tags_are_case_insensitive() -> None:
    assert choose_files(QUANTS, "q8_0") == ["Model-Q8_0.gguf"]
    assert choose_files(QUANTS, "f16") == ["Model-F16.gguf"]
    lower = ["qwen2.5-0.5b-instruct-q4_k_m.gguf", "qwen2.5-0.5b-instruct-q8_0.gguf"]
    assert choose_files(lower, "Q8_0") == ["qwen2.5-0.5b-instruct-q8_0.gguf"]
    assert choose_files(lower, "latest") == ["qwen2.5-0.5b-instruct-q4_k_m.gguf"]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("Q5_K_S", "mistral-7b-instruct-v0.2.Q5_K_S.gguf"),
        ("IQ4_XS", "mistral-7b-instruct-v0.2.IQ4_XS.gguf"),
        ("bf16", "mistral-7b-instruct-v0.2.BF16.gguf"),
        ("F16", "mistral-7b-instruct-v0.2.F16.gguf"),
        ("q4_0_4_4", "mistral-7b-instruct-v0.2.Q4_0_4_4.gguf"),
        ("ud-q4_k_xl", "mistral-7b-instruct-v0.2-UD-Q4_K_XL.gguf"),
    ],
)
def test_quant_labels_in_dotted_and_dashed_names(tag: str, expected: str) -> None:
    files = [
        "mistral-7b-instruct-v0.2.Q5_K_S.gguf",
        "mistral-7b-instruct-v0.2.IQ4_XS.gguf",
        "mistral-7b-instruct-v0.2.BF16.gguf",
        "mistral-7b-instruct-v0.2.F16.gguf",
        "mistral-7b-instruct-v0.2.Q4_0_4_4.gguf",
        "mistral-7b-instruct-v0.2-UD-Q4_K_XL.gguf",
    ]
    assert choose_files(files, tag) == [expected]


def test_a_file_name_is_a_tag_with_or_without_extension() -> None:
    files = ["stories260K.gguf", "stories15M.gguf", "mmproj-model-f16.gguf"]
    assert choose_files(files, "stories260K") == ["stories260K.gguf"]
    assert choose_files(files, "stories260k.gguf") == ["stories260K.gguf"]
    assert choose_files(files, "mmproj-model-f16.gguf") == ["mmproj-model-f16.gguf"]


def test_an_unknown_tag_lists_the_choices() -> None:
    with pytest.raises(InvalidRequest) as info:
        choose_files(QUANTS, "Q5_K_M")
    assert info.value.field == "model"
    assert "'Q5_K_M'" in str(info.value)
    for tag in ("Q8_0", "Q4_K_M", "F16"):
        assert tag in str(info.value)


def test_a_repository_without_gguf_files_is_an_error() -> None:
    with pytest.raises(InvalidRequest, match="no GGUF"):
        choose_files(["README.md", "model.safetensors"], "latest")


def test_split_shards_are_one_model_in_order() -> None:
    files = [
        "Big-Q4_K_M-00003-of-00003.gguf",
        "Big-Q8_0.gguf",
        "Big-Q4_K_M-00001-of-00003.gguf",
        "Big-Q4_K_M-00002-of-00003.gguf",
    ]
    expected = [f"Big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert choose_files(files, "latest") == expected
    assert choose_files(files, "q4_k_m") == expected
    assert choose_files(files, "Big-Q4_K_M") == expected
    assert choose_files(files, "Q8_0") == ["Big-Q8_0.gguf"]


def test_split_shards_in_a_subfolder() -> None:
    files = [f"Q4_K_M/Big-Q4_K_M-0000{i}-of-00002.gguf" for i in (2, 1)] + ["Q8_0/Big-Q8_0.gguf"]
    assert choose_files(files, "latest") == [f"Q4_K_M/Big-Q4_K_M-0000{i}-of-00002.gguf" for i in (1, 2)]
    assert choose_files(files, "Q8_0") == ["Q8_0/Big-Q8_0.gguf"]


def test_an_incomplete_split_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="incomplete"):
        choose_files(["Big-Q4_K_M-00001-of-00003.gguf", "Big-Q4_K_M-00003-of-00003.gguf"], "latest")


def test_the_same_label_twice_asks_for_a_file_name() -> None:
    files = ["a/Model-Q4_K_M.gguf", "b/Other-Q4_K_M.gguf"]
    with pytest.raises(InvalidRequest) as info:
        choose_files(files, "q4_k_m")
    assert "Model-Q4_K_M" in str(info.value) and "Other-Q4_K_M" in str(info.value)
    assert choose_files(files, "Other-Q4_K_M") == ["b/Other-Q4_K_M.gguf"]


# -- pulling from the stand-in Hub ---------------------------------------------------------------------


@pytest.mark.model
def test_pull_downloads_verifies_and_writes_the_manifest(stories_hub: HubStub, store: Store) -> None:
    name = parse_name("hf.co/tester/stories")
    events = list(pull(store, name))

    digest = f"sha256:{sha256(STORIES)}"
    size = STORIES.stat().st_size
    layer_status = f"pulling {digest[7:19]}"
    assert statuses(events) == [
        "pulling manifest",
        layer_status,
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    layer_events = [e for e in events if e.status == layer_status]
    assert all(e.digest == digest and e.total == size for e in layer_events)
    completed = [e.completed or 0 for e in layer_events]
    assert completed == sorted(completed) and completed[-1] == size
    assert [e.as_dict() for e in events][-1] == {"status": "success"}

    stored = store.get(name)
    assert [(layer.media_type, layer.digest, layer.size, layer.filename) for layer in stored.manifest.layers] == [
        (MEDIA_MODEL, digest, size, "stories260K.gguf")
    ]
    assert stored.manifest.config == {
        "model_format": "gguf",
        "source": "hf.co/tester/stories",
        "revision": stories_hub.commit("tester/stories"),
        "files": ["stories260K.gguf"],
    }
    assert sha256(store.blob_path(digest)) == digest[7:]
    assert stories_hub.downloads("stories260K.gguf") == 1
    assert ("GET", "/api/models/tester/stories") in stories_hub.request_log  # HF_ENDPOINT read at call time


@pytest.mark.model
def test_a_second_pull_reuses_the_store_and_the_hf_cache(stories_hub: HubStub, store: Store, tmp_path: Path) -> None:
    name = parse_name("hf.co/tester/stories:latest")
    first = statuses(list(pull(store, name)))

    assert stories_hub.downloads("stories260K.gguf") == 1

    # the same store: every blob is there, nothing is fetched, the steps are the same
    stories_hub.request_log.clear()
    assert statuses(list(pull(store, name))) == first
    assert all("/resolve/" not in path for _, path in stories_hub.request_log)

    # another store and a GGUF that another tool put in the HF cache: it is reused without a download (nor
    # even a HEAD, since the pull asks for the commit that model_info named)
    hf_hub_download(
        "tester/stories", "stories260K.gguf", cache_dir=Path(os.environ["HF_HOME"]) / "hub", endpoint=stories_hub.url
    )
    stories_hub.request_log.clear()
    other = Store(tmp_path / "other-models")
    assert statuses(list(pull(other, name))) == first
    assert all("/resolve/" not in path for _, path in stories_hub.request_log)
    assert other.get(name).manifest.layers == store.get(name).manifest.layers


def test_a_dropped_connection_resumes_with_a_range_request(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub writes whole 10 MiB chunks, so the file must be larger than one for a resume to show
    files = fake_files(tmp_path / "big", ["Large-Q8_0.gguf"], size=12 << 20)
    size = files["Large-Q8_0.gguf"].stat().st_size
    with serve(monkeypatch, {"tester/large": files}) as stub:
        stub.fail_after_bytes = 11 << 20
        events = list(pull(store, parse_name("hf.co/tester/large")))
        assert stub.downloads("Large-Q8_0.gguf") == 2
        assert len(stub.range_log) == 1
        m = re.fullmatch(r"bytes=(\d+)-", stub.range_log[0])
        assert m is not None and 0 < int(m.group(1)) < size
    assert [e.completed for e in events if e.digest][-1] == size
    assert sha256(blobs(store)[0]) == sha256(files["Large-Q8_0.gguf"])


@pytest.mark.model
def test_a_checksum_mismatch_stores_nothing(stories_hub: HubStub, store: Store, hf_env: Path) -> None:
    stories_hub.sha256_override[("tester/stories", "stories260K.gguf")] = "ab" * 32
    name = parse_name("hf.co/tester/stories")
    with pytest.raises(DownloadError, match="checksum"):
        list(pull(store, name))
    assert store.find(name) is None
    assert blobs(store) == []
    assert not [p for p in hf_env.rglob("*") if p.is_file() and p.stat().st_size == STORIES.stat().st_size]

    # once the Hub tells the truth again, the next pull downloads afresh and succeeds
    del stories_hub.sha256_override[("tester/stories", "stories260K.gguf")]
    assert statuses(list(pull(store, name)))[-1] == "success"


@pytest.mark.model
@pytest.mark.parametrize("after", ["pulling manifest", "pulling 270cba1bd510"])
def test_cancel_stops_the_pull_without_a_manifest(stories_hub: HubStub, store: Store, after: str) -> None:
    cancel = threading.Event()
    name = parse_name("hf.co/tester/stories")
    seen = []
    with pytest.raises(DownloadError, match="pull cancelled"):
        for event in pull(store, name, cancel=cancel):
            seen.append(event.status)
            if event.status == after:
                cancel.set()
    assert seen[-1] == after
    assert store.find(name) is None
    # nothing complete is left; at most the download so far, which the next pull resumes
    assert all(blob.name.endswith(".partial") for blob in blobs(store))


def test_split_gguf_pulls_every_shard_in_order(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = [f"Big-Q4_K_M-0000{i}-of-00002.gguf" for i in (1, 2)]
    files = fake_files(tmp_path / "shards", [shards[1], shards[0], "Big-Q8_0.gguf"])
    with serve(monkeypatch, {"tester/big": files}) as stub:
        name = parse_name("hf.co/tester/big")
        events = list(pull(store, name))
        digests = [f"sha256:{sha256(files[s])}" for s in shards]
        assert statuses(events) == [
            "pulling manifest",
            *(f"pulling {d[7:19]}" for d in digests),
            "verifying sha256 digest",
            "writing manifest",
            "success",
        ]
        manifest = store.get(name).manifest
        assert [(layer.digest, layer.filename) for layer in manifest.layers] == list(zip(digests, shards, strict=True))
        assert manifest.config["files"] == shards
        assert stub.downloads("Big-Q8_0.gguf") == 0
        assert store.model_path(manifest).name == "model-00001-of-00002.gguf"


def test_an_unknown_quant_names_the_choices(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = fake_files(tmp_path / "q", ["Tiny-Q8_0.gguf", "Tiny-Q4_K_M.gguf"])
    with serve(monkeypatch, {"tester/tiny": files}) as stub:
        with pytest.raises(InvalidRequest) as info:
            list(pull(store, parse_name("hf.co/tester/tiny:Q5_K_M")))
        assert info.value.field == "model"
        assert "hf.co/tester/tiny" in str(info.value)
        assert "Q8_0" in str(info.value) and "Q4_K_M" in str(info.value)
        assert all("/resolve/" not in path for _, path in stub.request_log)
        assert store.find(parse_name("hf.co/tester/tiny:Q5_K_M")) is None


def test_an_unknown_repository_is_model_not_found(hf_env: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(monkeypatch, {}):
        with pytest.raises(ModelNotFound, match="hf.co/nobody/nothing not found"):
            list(pull(store, parse_name("hf.co/nobody/nothing")))


def test_a_repository_without_gguf_is_model_not_found(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = fake_files(tmp_path / "st", ["model.safetensors", "README.md"], size=100)
    with serve(monkeypatch, {"tester/st": files}):
        with pytest.raises(ModelNotFound, match="no GGUF"):
            list(pull(store, parse_name("hf.co/tester/st")))


def test_a_gated_repository_needs_hf_token(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = fake_files(tmp_path / "g", ["Gated-Q4_K_M.gguf"])
    name = parse_name("hf.co/tester/gated")
    with serve(monkeypatch, {"tester/gated": files}, gated={"tester/gated": "hf_letmein"}):
        with pytest.raises(ModelNotFound, match="HF_TOKEN"):
            list(pull(store, name))
        assert store.find(name) is None
        monkeypatch.setenv("HF_TOKEN", "hf_letmein")
        assert statuses(list(pull(store, name)))[-1] == "success"


def test_only_hf_names_can_be_pulled(store: Store) -> None:
    with pytest.raises(ModelNotFound, match=r"hf\.co/<user>/<repo>"):
        list(pull(store, parse_name("llama3:8b")))


def test_an_unreachable_hub_is_a_download_error(hf_env: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        list(pull(store, parse_name("hf.co/tester/stories")))


def test_two_pulls_of_one_blob_into_one_store_download_it_once(
    hf_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Stores on one root stand for two replicas (flock locks belong to open files): the one that does not
    own the download says it waits, then takes the other's blob; no second download, nothing appended twice."""
    files = fake_files(tmp_path / "slow", ["Slow-Q4_K_M.gguf"], size=60_000)
    expected = sha256(files["Slow-Q4_K_M.gguf"])
    name = parse_name("hf.co/tester/slow")
    with serve(monkeypatch, {"tester/slow": files}) as stub:
        stub.rate = 100_000  # about 0.6 s a download: the two overlap
        results: dict[int, list[Progress] | BaseException] = {}

        def go(i: int) -> None:
            try:
                results[i] = list(pull(Store(tmp_path / "models"), name))
            except BaseException as exc:
                results[i] = exc

        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert stub.downloads("Slow-Q4_K_M.gguf") == 1
    runs = [results[0], results[1]]
    assert all(isinstance(r, list) and r[-1].status == "success" for r in runs), runs
    waited = [r for r in runs if isinstance(r, list) and any(e.status.startswith("waiting for another") for e in r)]
    assert len(waited) == 1, "one pull waited for the other's download"
    waiting = next(e for e in waited[0] if e.status.startswith("waiting for another"))
    assert waiting.status == f"waiting for another process downloading sha256-{expected[:12]}"
    store = Store(tmp_path / "models")
    assert [p.name for p in sorted(store.blobs_dir.iterdir())] == [f"sha256-{expected}"]
    assert sha256(store.blobs_dir / f"sha256-{expected}") == expected


# -- projectors: llama-server's -hf choice (common/download.cpp find_best_mmproj) --------------------------


def test_a_repository_without_a_projector_has_none() -> None:
    assert choose_projector(QUANTS, "Model-Q4_K_M.gguf") is None


def test_the_projector_closest_to_the_models_precision_is_chosen() -> None:
    files = ["mmproj-Model-f32.gguf", "mmproj-Model-f16.gguf", "mmproj-Model-Q8_0.gguf", "Model-Q4_K_M.gguf"]
    assert choose_projector(files, "Model-Q4_K_M.gguf") == "mmproj-Model-Q8_0.gguf"  # 8 bits is nearest 4
    assert choose_projector(files, "Model-F16.gguf") == "mmproj-Model-f16.gguf"
    assert choose_projector(files, "Model-BF16.gguf") == "mmproj-Model-f16.gguf"  # 16 bits either way
    assert choose_projector(files, "Model-Q8_0-00001-of-00002.gguf") == "mmproj-Model-Q8_0.gguf"
    assert choose_projector(files, "model.gguf") == "mmproj-Model-Q8_0.gguf", "no label: 0 bits, nearest 8"


def test_equal_projectors_go_by_the_repositorys_listing() -> None:
    assert choose_projector(["b-mmproj-F16.gguf", "a-mmproj-F16.gguf"], "M-Q4_0.gguf") == "b-mmproj-F16.gguf"


def test_the_projector_is_beside_the_model_or_in_a_folder_above_it() -> None:
    files = ["mmproj-F16.gguf", "other/mmproj-F16.gguf", "q4/mmproj-F32.gguf", "q4/Model-Q4_K_M.gguf"]
    assert choose_projector(files, "q4/Model-Q4_K_M.gguf") == "q4/mmproj-F32.gguf", "the deepest folder wins"
    assert choose_projector(files[:2], "q4/Model-Q4_K_M.gguf") == "mmproj-F16.gguf"
    assert choose_projector(["other/mmproj-F16.gguf"], "q4/Model-Q4_K_M.gguf") is None
    assert choose_projector(["q4/mmproj-F16.gguf"], "Model-Q4_K_M.gguf") is None, "never from a folder below"


def test_a_projector_is_any_gguf_with_mmproj_in_its_path_never_a_model() -> None:
    files = ["Qwen2.5-Omni-3B-Q4_K_M.gguf", "Qwen2.5-Omni-3B-mmproj-Q8_0.gguf", "mmproj.txt"]
    assert choose_files(files, "latest") == ["Qwen2.5-Omni-3B-Q4_K_M.gguf"]
    assert choose_projector(files, files[0]) == "Qwen2.5-Omni-3B-mmproj-Q8_0.gguf"
    # as llama.cpp looks for it: "mmproj", case-sensitive
    assert choose_projector(["MMPROJ-F16.gguf", "Model-Q4_K_M.gguf"], "Model-Q4_K_M.gguf") is None


def projector_repo(tmp_path: Path) -> dict[str, Path]:
    files = fake_files(tmp_path / "vision", ["Model-Q4_K_M.gguf", "Model-F16.gguf"])
    for i, name in enumerate(("mmproj-Model-F16.gguf", "mmproj-Model-F32.gguf")):
        files[name] = write_projector(tmp_path / "vision" / name, seed=i)
    return files


def test_pull_fetches_the_chosen_projector_as_a_layer_of_its_own(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = projector_repo(tmp_path)
    with serve(monkeypatch, {"tester/vision": files}) as stub:
        name = parse_name("hf.co/tester/vision")
        events = list(pull(store, name))
        model, projector = (f"sha256:{sha256(files[f])}" for f in ("Model-Q4_K_M.gguf", "mmproj-Model-F16.gguf"))
        assert statuses(events) == [
            "pulling manifest",
            f"pulling {model[7:19]}",
            f"pulling {projector[7:19]}",
            "verifying sha256 digest",
            "writing manifest",
            "success",
        ]
        manifest = store.get(name).manifest
        assert [(layer.media_type, layer.digest, layer.filename) for layer in manifest.layers] == [
            (MEDIA_MODEL, model, "Model-Q4_K_M.gguf"),
            (MEDIA_PROJECTOR, projector, "mmproj-Model-F16.gguf"),
        ]
        assert manifest.config["files"] == ["Model-Q4_K_M.gguf"]
        assert manifest.config["projector"] == "mmproj-Model-F16.gguf"
        assert store.projector_path(manifest) == store.blob_path(projector)
        assert store.model_path(manifest) == store.blob_path(model), "the projector is never the model"
        assert stub.downloads("mmproj-Model-F32.gguf") == 0 and stub.downloads("Model-F16.gguf") == 0


def test_a_file_named_as_a_projector_that_is_none_stores_no_model(
    hf_env: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = fake_files(tmp_path / "odd", ["Model-Q4_K_M.gguf", "mmproj-Model-F16.gguf"])  # both llama models
    with serve(monkeypatch, {"tester/odd": files}):
        with pytest.raises(DownloadError, match="mmproj-Model-F16.gguf is named as a multimodal projector"):
            list(pull(store, parse_name("hf.co/tester/odd")))
    assert store.find(parse_name("hf.co/tester/odd")) is None
