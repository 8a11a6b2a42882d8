"""The service keeps the models it read and their load specs: the same objects while the manifest is the same,
a fresh read the moment it changes (a create, a copy over it, a delete)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.errors import ModelNotFound
from localllm.domain.names import parse_name
from localllm.domain.options import Options
from localllm.modelstore.store import MEDIA_SYSTEM, Manifest, Store
from localllm.scheduling.scheduler import Scheduler
from localllm.service.core import Service

from ..fakes import FakeFactory, write_tiny_gguf


def test_a_model_is_read_again_only_when_its_manifest_changes(tmp_path: Path) -> None:
    settings = Settings(host=parse_host(""), models_dir=tmp_path / "models")
    store = Store(settings.models_dir)
    gguf = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf"))
    name = parse_name("tiny")
    store.write_manifest(name, Manifest((gguf,)))
    service = Service(settings, store, Scheduler(factory=FakeFactory()))

    first = service.model(name)
    assert service.model(name) is first and first.system is None
    ref = service._ref(first, Options())
    assert service._ref(first, Options()) is ref
    assert service._ref(first, Options(num_ctx=128)).spec.n_ctx == 128, "other options, another spec"

    store.write_manifest(name, Manifest((gguf, store.add_blob_bytes(b"Be brief.", MEDIA_SYSTEM))))
    changed = service.model(name)
    assert changed is not first and changed.system == "Be brief."
    assert service._ref(changed, Options()) is not ref

    store.delete(name)
    with pytest.raises(ModelNotFound):
        service.model(name)
