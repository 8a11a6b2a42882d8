"""Multimodal projectors in the store (issue 25, item 1): a projector layer makes a model `vision` / `audio` (from
the projector's clip metadata), `/api/show` gives its `projector_info` and writes it back as a second FROM,
`/v1/models` lists the model's input modalities, create takes a projector among `files`, the load spec carries its
path and the memory estimate its size; `verify` finds a damaged projector as it finds a damaged model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.names import parse_name
from localllm.domain.options import Options
from localllm.modelstore import modelfile
from localllm.modelstore.gguf import read_info
from localllm.modelstore.models import read_model
from localllm.modelstore.store import MEDIA_PROJECTOR, Layer, Manifest, Store
from localllm.observability.machine import Memory
from localllm.scheduling.memory import MIN_COMPUTE, GiB, MiB, ModelShape, context_that_fits, estimate, fit_layers
from localllm.scheduling.scheduler import Scheduler
from localllm.server.app import create_app
from localllm.service.core import Service
from localllm.service.loadref import model_ref
from localllm_cli.render import human_number, model_summary

from ..fakes import FakeFactory, write_tiny_gguf
from ..projectors import write_projector

TEMPLATE = "{{ messages[-1].content }}!"


def projector_layer(store: Store, path: Path) -> Layer:
    layer = store.add_blob_file(path)
    return Layer(MEDIA_PROJECTOR, layer.digest, layer.size)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """`tiny` (text), `vision` (tiny + a vision projector), `voice` (tiny + an audio-only projector)."""
    store = Store(tmp_path / "models")
    tiny = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf", template=TEMPLATE))
    store.write_manifest(parse_name("tiny"), Manifest((tiny,)))
    vision = projector_layer(store, write_projector(tmp_path / "mmproj-vision.gguf"))
    store.write_manifest(parse_name("vision"), Manifest((tiny, vision)))
    voice = projector_layer(store, write_projector(tmp_path / "mmproj-voice.gguf", vision=False, audio=True, seed=1))
    store.write_manifest(parse_name("voice"), Manifest((tiny, voice)))
    return store


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def client(tmp_path: Path, store: Store, factory: FakeFactory) -> Iterator[TestClient]:
    settings = Settings(host=parse_host(""), models_dir=store.root)
    service = Service(settings, store, Scheduler(factory=factory))
    with TestClient(create_app(settings, service=service), base_url="http://127.0.0.1") as client:
        yield client


def projector_digest(store: Store, name: str) -> str:
    layer = store.get(parse_name(name)).manifest.projector
    assert layer is not None
    return layer.digest


def upload(client: TestClient, path: Path) -> str:
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert client.post(f"/api/blobs/{digest}", content=path.read_bytes()).status_code == 201
    return digest


def create(client: TestClient, **body: Any) -> Any:
    return client.post("/api/create", json={"stream": False, **body})


# -- what the GGUF says -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("general_type", "architecture", "projector"),
    [("mmproj", "clip", True), ("projector", "clip", True), (None, "clip", True), ("mmproj", "siglip", True),
     ("model", "llama", False), (None, "llama", False)],
)  # fmt: skip
def test_a_projector_is_told_by_its_general_type_or_the_clip_architecture(
    tmp_path: Path, general_type: str | None, architecture: str, projector: bool
) -> None:
    path = write_projector(tmp_path / "p.gguf", general_type=general_type, architecture=architecture)
    assert read_info(path).is_projector is projector
    assert read_info(path).media == (("vision",) if projector else ())


def test_what_a_projector_encodes_comes_from_its_clip_flags(tmp_path: Path) -> None:
    assert read_info(write_projector(tmp_path / "v.gguf")).media == ("vision",)
    assert read_info(write_projector(tmp_path / "a.gguf", vision=False, audio=True)).media == ("audio",)
    assert read_info(write_projector(tmp_path / "va.gguf", audio=True)).media == ("vision", "audio")
    assert read_info(write_projector(tmp_path / "n.gguf", vision=False)).media == ()
    assert read_info(write_tiny_gguf(tmp_path / "m.gguf")).media == (), "a model is no projector"


def test_a_model_with_a_projector_has_its_capabilities_and_modalities(store: Store) -> None:
    tiny, vision, voice = (read_model(store, parse_name(n)) for n in ("tiny", "vision", "voice"))
    assert tiny.projector is None and tiny.capabilities == ["completion"] and tiny.input_modalities == ("text",)
    assert vision.projector == store.blob_path(projector_digest(store, "vision"))
    assert vision.capabilities == ["completion", "vision"] and vision.input_modalities == ("text", "image")
    assert voice.capabilities == ["completion", "audio"] and voice.input_modalities == ("text", "audio")
    assert vision.details.families == ("llama", "clip")
    assert vision.path == tiny.path, "the model file stays the model's own"


# -- /api/show, /v1/models -------------------------------------------------------------------------------


def test_show_lists_vision_and_gives_projector_info_as_ollama(client: TestClient, store: Store) -> None:
    shown = client.post("/api/show", json={"model": "vision"}).json()
    assert shown["capabilities"] == ["completion", "vision"]
    info = shown["projector_info"]
    assert info["general.architecture"] == "clip" and info["general.type"] == "mmproj"
    assert info["clip.has_vision_encoder"] is True and info["clip.vision.projection_dim"] == 32
    assert (
        info["general.parameter_count"] == read_info(store.blob_path(projector_digest(store, "vision"))).parameter_count
    )
    assert shown["details"]["families"] == ["llama", "clip"]
    verbose = client.post("/api/show", json={"model": "vision", "verbose": True}).json()
    assert verbose["projector_info"]["clip.vision.embedding_length"] == 64

    plain = client.post("/api/show", json={"model": "tiny"}).json()
    assert "projector_info" not in plain and plain["capabilities"] == ["completion"]
    assert client.post("/api/show", json={"model": "voice"}).json()["capabilities"] == ["completion", "audio"]


def test_show_writes_the_projector_back_as_a_second_from(client: TestClient, store: Store) -> None:
    text = client.post("/api/show", json={"model": "vision"}).json()["modelfile"]
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    model = store.model_path(store.get(parse_name("vision")).manifest)
    assert froms == [f"FROM {model}", f"FROM {store.blob_path(projector_digest(store, 'vision'))}"]
    read = modelfile.parse(text)
    assert (read.from_, read.projector) == (str(model), str(store.blob_path(projector_digest(store, "vision"))))


def test_v1_models_lists_each_models_input_modalities(client: TestClient) -> None:
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert data["vision:latest"]["input_modalities"] == ["text", "image"]
    assert data["voice:latest"]["input_modalities"] == ["text", "audio"]
    assert data["tiny:latest"]["input_modalities"] == ["text"]
    one = client.get("/v1/models/vision").json()
    assert one["id"] == "vision:latest" and one["input_modalities"] == ["text", "image"]


# -- load ------------------------------------------------------------------------------------------------


def test_the_load_spec_names_the_projector_and_the_runner_gets_it(
    client: TestClient, store: Store, factory: FakeFactory
) -> None:
    for name in ("vision", "tiny"):
        r = client.post("/api/generate", json={"model": name, "prompt": "hi", "stream": False})
        assert r.status_code == 200, r.text
    vision, tiny = factory.runners
    assert vision.spec.projector == str(store.blob_path(projector_digest(store, "vision")))
    assert tiny.spec.projector == ""
    assert vision.spec.model_path == tiny.spec.model_path


def test_the_memory_estimate_counts_the_projector_apart_from_the_layers(store: Store, tmp_path: Path) -> None:
    settings = Settings(host=parse_host(""), models_dir=store.root)
    machine = Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=0, vram_free=0)
    model = read_model(store, parse_name("vision"))
    ref = model_ref(model, Options(), settings, store, lambda: machine)
    projector = store.get(parse_name("vision")).manifest.projector
    assert projector is not None
    assert ref.projector == projector.size and ref.size == model.stored.manifest.size - projector.size
    plain = model_ref(read_model(store, parse_name("tiny")), Options(), settings, store, lambda: machine)
    assert plain.projector == 0 and plain.size == ref.size
    assert ref.estimate().total - plain.estimate().total == projector.size + MIN_COMPUTE  # and its compute


def test_a_projector_goes_whole_with_the_first_layer_on_the_gpu() -> None:
    shape = ModelShape(block_count=10, embedding_length=512, head_count=8, head_count_kv=8)
    text = estimate(1 * GiB, shape, n_ctx=1024, n_parallel=1)
    vision = estimate(1 * GiB, shape, n_ctx=1024, n_parallel=1, projector=600 * MiB)
    assert vision.projector == 600 * MiB + 300 * MiB, "its weights, and half as much again for its compute buffer"
    assert vision.size == text.size + vision.projector and vision.total == text.total + vision.projector
    assert vision.on_gpu(0) == 0
    assert vision.on_gpu(1) == text.on_gpu(1) + vision.projector
    assert vision.on_gpu(10) == vision.total
    usable = text.on_gpu(5) + MiB  # five layers and a little
    assert fit_layers(text, usable) == 5
    assert fit_layers(vision, usable) < 5, "the projector takes room from the layers"
    assert fit_layers(vision, usable + vision.projector) == 5
    assert fit_layers(vision, vision.compute + vision.projector) == 0
    wide = ModelShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=32)
    roomy = context_that_fits(5 * GiB, wide, n_parallel=4, memory=24 * GiB, want=32768)
    assert roomy == 8192
    assert context_that_fits(5 * GiB, wide, n_parallel=4, memory=24 * GiB, want=32768, projector=2 * GiB) == 4096


# -- create ----------------------------------------------------------------------------------------------


def test_create_from_a_gguf_and_a_projector_in_files(client: TestClient, store: Store, tmp_path: Path) -> None:
    model = upload(client, write_tiny_gguf(tmp_path / "own.gguf", template=TEMPLATE, context_length=512))
    projector = upload(client, write_projector(tmp_path / "mmproj-own.gguf", seed=7))
    r = create(client, model="own", files={"own.gguf": model, "mmproj-own.gguf": projector})
    assert r.status_code == 200, r.text
    layers = store.get(parse_name("own")).manifest.layers
    assert [(x.media_type.rsplit(".", 1)[-1], x.digest) for x in layers[:2]] == [
        ("model", model),
        ("projector", projector),
    ]
    assert client.post("/api/show", json={"model": "own"}).json()["capabilities"] == ["completion", "vision"]


def test_create_adds_a_projector_to_a_model_from_and_keeps_it_in_what_is_built_on_it(
    client: TestClient, store: Store, tmp_path: Path
) -> None:
    projector = upload(client, write_projector(tmp_path / "mmproj-audio.gguf", vision=False, audio=True, seed=8))
    r = create(client, model="hears", **{"from": "tiny"}, files={"mmproj-audio.gguf": projector})
    assert r.status_code == 200, r.text
    assert projector_digest(store, "hears") == projector
    assert store.get(parse_name("hears")).manifest.model_layers == store.get(parse_name("tiny")).manifest.model_layers
    assert create(client, model="brief", **{"from": "hears"}, system="Be brief.").status_code == 200
    assert projector_digest(store, "brief") == projector, "a model built on another keeps its projector"
    assert client.post("/api/show", json={"model": "brief"}).json()["capabilities"] == ["completion", "audio"]
    # another projector replaces the base's
    vision = upload(client, write_projector(tmp_path / "mmproj-eyes.gguf", seed=9))
    assert create(client, model="sees", **{"from": "hears"}, files={"mmproj-eyes.gguf": vision}).status_code == 200
    assert projector_digest(store, "sees") == vision and len(store.get(parse_name("sees")).manifest.layers) == 2


def test_create_refuses_two_projectors_or_a_projector_alone(client: TestClient, tmp_path: Path) -> None:
    one = upload(client, write_projector(tmp_path / "mmproj-1.gguf", seed=1))
    two = upload(client, write_projector(tmp_path / "mmproj-2.gguf", seed=2))
    r = create(client, model="x", **{"from": "tiny"}, files={"mmproj-1.gguf": one, "mmproj-2.gguf": two})
    assert r.status_code == 400 and "files holds 2 projectors (mmproj-1.gguf, mmproj-2.gguf)" in r.json()["error"]
    r = create(client, model="x", files={"mmproj-1.gguf": one})
    assert r.status_code == 400 and "files holds only a projector" in r.json()["error"]
    model = upload(client, write_tiny_gguf(tmp_path / "m.gguf", template=TEMPLATE, context_length=128))
    r = create(client, model="x", **{"from": "tiny"}, files={"m.gguf": model, "mmproj-1.gguf": one})
    assert r.status_code == 400 and "either from or the model's GGUF in files" in r.json()["error"]
    assert client.post("/api/show", json={"model": "x"}).status_code == 404, "nothing was created"


# -- verify ----------------------------------------------------------------------------------------------


def test_verify_finds_a_damaged_projector_and_the_model_lists_as_damaged(client: TestClient, store: Store) -> None:
    blob = store.blob_path(projector_digest(store, "vision"))
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x01
    blob.write_bytes(bytes(data))
    r = client.post("/api/verify", json={"model": "vision", "stream": False})
    assert r.status_code == 200 and r.json()["damaged"] == ["vision:latest"], r.text
    listed = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert listed["vision:latest"]["damaged"].startswith(f"its blob {blob.name} failed its sha256 check")
    assert "damaged" not in listed["tiny:latest"], "the model's own blob is fine and shared"
    shown = client.post("/api/show", json={"model": "vision"})
    assert shown.status_code >= 400 and blob.name in shown.json()["error"]
    assert "vision:latest" not in {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "input_modalities" not in client.get("/v1/models/vision").json(), "listed as OpenAI lists it, no more"


# -- Modelfile -------------------------------------------------------------------------------------------


def test_a_second_from_is_the_projector_and_is_written_back() -> None:
    mf = modelfile.parse("FROM ./model.gguf\nFROM ./mmproj-model-f16.gguf\nSYSTEM hi\n")
    assert (mf.from_, mf.projector, mf.system) == ("./model.gguf", "./mmproj-model-f16.gguf", "hi")
    assert modelfile.format(mf).splitlines()[:2] == ["FROM ./model.gguf", "FROM ./mmproj-model-f16.gguf"]
    assert modelfile.parse(modelfile.format(mf)) == mf
    assert modelfile.parse("FROM m\n").projector is None


def test_the_create_request_puts_the_projector_among_files() -> None:
    mf = modelfile.parse("FROM base\nFROM ./mmproj.gguf\n")
    body = modelfile.to_create_request(mf, model="m", projector={"mmproj.gguf": "sha256:" + "1" * 64})
    assert body["from"] == "base" and body["files"] == {"mmproj.gguf": "sha256:" + "1" * 64}
    local = modelfile.parse("FROM ./m.gguf\nFROM ./mmproj.gguf\n")
    body = modelfile.to_create_request(
        local, model="m", files={"m.gguf": "sha256:" + "2" * 64}, projector={"mmproj.gguf": "sha256:" + "1" * 64}
    )
    assert "from" not in body and set(body["files"]) == {"m.gguf", "mmproj.gguf"}
    with pytest.raises(ValueError, match="upload it and pass its digest as projector"):
        modelfile.to_create_request(mf, model="m")


# -- `localllm show` -------------------------------------------------------------------------------------


def test_show_prints_capabilities_and_a_projector_section_as_ollama(client: TestClient) -> None:
    shown = client.post("/api/show", json={"model": "vision"}).json()
    text = model_summary(json.loads(json.dumps(shown)))
    assert "  Capabilities\n    completion\n    vision\n" in text
    projector = text.split("  Projector\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in projector] == [
        ["architecture", "clip"],
        ["parameters", human_number(shown["projector_info"]["general.parameter_count"])],
        ["embedding", "length", "64"],
        ["dimensions", "32"],
    ]
