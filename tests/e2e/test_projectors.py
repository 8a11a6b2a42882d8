"""Projectors in the store, end to end (issue 25, item 1): a real daemon pulls a repository with projector files
from the Hub stand-in (the real huggingface_hub download path) and takes the one llama-server's `-hf` would;
`localllm show`, the `ollama` and `openai` packages see the model's vision; `show --modelfile` and a Modelfile
with a second FROM create models with the projector through the real CLI; `verify` finds a damaged projector and
a pull repairs it.

The projectors here are small GGUFs with a projector's metadata (tests/projectors.py), not ones mtmd can run:
nothing here generates with them. Images through a real projector are the runner's tests, on the tiny vision
model (issue 25, item 7) -- where a pull of that model from the Hub stand-in belongs too (the lead integrates)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from localllm.domain.names import parse_name
from localllm.modelstore.store import MEDIA_PROJECTOR, Manifest

from ..hubstub import HubStub
from ..projectors import write_projector
from .conftest import Daemon, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

REPO = "testorg/stories-vision-GGUF"
MODEL = f"hf.co/{REPO}"
MODEL_FILE = "stories260K-F32.gguf"  # 32 bits: the F32 projector is the nearest
CHOSEN = "mmproj-stories260K-F32.gguf"


@pytest.fixture(scope="module")
def projectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("projectors")
    return {
        name: write_projector(folder / name, seed=i)
        for i, name in enumerate(("mmproj-stories260K-F16.gguf", CHOSEN, "mmproj-stories260K-Q8_0.gguf"))
    }


@pytest.fixture(scope="module")
def stub(stories_gguf: Path, projectors: dict[str, Path]) -> Iterator[HubStub]:
    with HubStub({REPO: {MODEL_FILE: stories_gguf, **projectors}}) as hub:
        yield hub


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, stub: HubStub) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("daemon"), stub)
    try:
        pulled = d.cli("pull", MODEL)
        assert pulled.returncode == 0, pulled.stderr
        yield d
    finally:
        stop_daemon(d)


def manifest(daemon: Daemon, name: str) -> Manifest:
    path = daemon.models_dir.joinpath("manifests", *parse_name(name).parts())
    return Manifest.from_bytes(path.read_bytes())


def show(daemon: Daemon, name: str) -> httpx.Response:
    return httpx.post(daemon.url + "/api/show", json={"model": name}, timeout=30)


def test_the_pull_fetches_the_projector_llama_server_would(
    daemon: Daemon, stub: HubStub, projectors: dict[str, Path]
) -> None:
    layers = manifest(daemon, MODEL).layers
    assert [(x.media_type.rsplit(".", 1)[-1], x.filename) for x in layers] == [
        ("model", MODEL_FILE),
        ("projector", CHOSEN),
    ]
    blob = daemon.models_dir / "blobs" / layers[1].digest.replace(":", "-")
    assert blob.read_bytes() == projectors[CHOSEN].read_bytes()
    assert stub.downloads(CHOSEN) == 1
    assert stub.downloads("mmproj-stories260K-F16.gguf") == stub.downloads("mmproj-stories260K-Q8_0.gguf") == 0


def test_clients_see_the_vision_capability_and_the_projector(daemon: Daemon) -> None:
    shown = ollama.Client(host=daemon.url).show(MODEL)
    assert shown.capabilities == ["completion", "vision"]
    raw = show(daemon, MODEL).json()
    assert raw["projector_info"]["general.architecture"] == "clip"
    assert raw["projector_info"]["clip.has_vision_encoder"] is True
    assert raw["details"]["families"] == ["llama", "clip"]

    models = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused").models.list()
    (entry,) = [m for m in models.data if m.id == f"{MODEL}:latest"]
    assert (entry.model_extra or {})["input_modalities"] == ["text", "image"]

    out = daemon.cli("show", MODEL)
    assert out.returncode == 0, out.stderr
    assert "  Capabilities\n    completion\n    vision\n" in out.stdout
    projector = out.stdout.split("  Projector\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split() for line in projector.splitlines()][0] == ["architecture", "clip"]
    assert ["dimensions", "32"] in [line.split() for line in projector.splitlines()]


def test_show_modelfile_creates_the_same_model_back(daemon: Daemon, tmp_path: Path) -> None:
    text = daemon.cli("show", "--modelfile", MODEL)
    assert text.returncode == 0, text.stderr
    froms = [line for line in text.stdout.splitlines() if line.startswith("FROM ")]
    projector = manifest(daemon, MODEL).projector
    assert projector is not None and len(froms) == 2 and froms[1].endswith(projector.digest.replace(":", "-"))
    (tmp_path / "Modelfile").write_text(text.stdout)
    created = daemon.cli("create", "again", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    again = manifest(daemon, "again").projector
    assert again is not None and (again.media_type, again.digest) == (MEDIA_PROJECTOR, projector.digest)
    assert manifest(daemon, "again").model_layers[0].digest == manifest(daemon, MODEL).model_layers[0].digest
    assert show(daemon, "again").json()["capabilities"] == ["completion", "vision"]


def test_a_modelfile_with_a_local_model_and_projector_creates_a_vision_model(
    daemon: Daemon, tmp_path: Path, stories_gguf: Path
) -> None:
    shutil.copyfile(stories_gguf, tmp_path / "stories.gguf")
    write_projector(tmp_path / "mmproj-mine.gguf", vision=False, audio=True, seed=42)
    (tmp_path / "Modelfile").write_text("FROM ./stories.gguf\nFROM ./mmproj-mine.gguf\nSYSTEM Listen.\n")
    created = daemon.cli("create", "mine", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    assert show(daemon, "mine").json()["capabilities"] == ["completion", "audio"]
    layer = manifest(daemon, "mine").projector
    assert layer is not None and layer.media_type == MEDIA_PROJECTOR
    blob = daemon.models_dir / "blobs" / layer.digest.replace(":", "-")
    assert blob.read_bytes() == (tmp_path / "mmproj-mine.gguf").read_bytes()

    # a model by name and a projector file: the projector goes in files beside from
    (tmp_path / "Named").write_text(f"FROM {MODEL}\nFROM ./mmproj-mine.gguf\n")
    named = daemon.cli("create", "named", "-f", str(tmp_path / "Named"))
    assert named.returncode == 0, named.stderr
    assert manifest(daemon, "named").projector == layer
    assert manifest(daemon, "named").model_layers[0].digest == manifest(daemon, MODEL).model_layers[0].digest

    (tmp_path / "Only").write_text("FROM ./mmproj-mine.gguf\n")
    refused = daemon.cli("create", "nothing", "-f", str(tmp_path / "Only"))
    assert refused.returncode != 0 and "files holds only a projector" in refused.stderr


def test_create_over_the_api_adds_a_projector_to_a_text_model(daemon: Daemon, tmp_path: Path) -> None:
    path = write_projector(tmp_path / "mmproj-api.gguf", seed=5)
    client = ollama.Client(host=daemon.url)
    digest = client.create_blob(path)
    client.create(model="api-vision", from_=MODEL, files={"mmproj-api.gguf": digest}, system="Look.")
    shown = show(daemon, "api-vision").json()
    assert shown["capabilities"] == ["completion", "vision"] and shown["system"] == "Look."
    layer = manifest(daemon, "api-vision").projector
    assert layer is not None and layer.digest == digest


def test_verify_finds_a_damaged_projector_and_a_pull_repairs_it(daemon: Daemon) -> None:
    layer = manifest(daemon, MODEL).projector
    assert layer is not None
    blob = daemon.models_dir / "blobs" / layer.digest.replace(":", "-")
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0x01
    blob.write_bytes(bytes(data))

    found = daemon.cli("verify", MODEL)
    assert found.returncode == 1, found.stdout
    assert f"DAMAGED  {blob.name.removeprefix('sha256-')[:12]}" in found.stdout
    assert "failed its sha256 check" in daemon.cli("list").stderr
    assert show(daemon, MODEL).status_code >= 400

    repaired = daemon.cli("pull", MODEL)
    assert repaired.returncode == 0, repaired.stderr
    assert blob.read_bytes() != bytes(data) and daemon.cli("verify", MODEL).returncode == 0
    assert show(daemon, MODEL).json()["capabilities"] == ["completion", "vision"]
