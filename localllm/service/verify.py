"""Check the store's blobs again (`POST /api/verify`, `localllm verify`): each blob is hashed and compared with
its name. A blob that does not match is moved aside (`Store.verify_blob`), logged, and the models naming it are
unloaded; they list as damaged (`Service.list_models`) until pulled again or deleted. Never silent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..domain.names import ModelName
from ..modelstore.store import StoredModel
from .core import Service

log = logging.getLogger("localllm.service")


@dataclass(frozen=True)
class BlobCheck:
    """One blob checked: the models that name it, and what is wrong with it (None: it hashes to its name)."""

    digest: str
    size: int
    models: tuple[str, ...]
    problem: str | None = None


async def verify(service: Service, name: ModelName | None = None) -> AsyncGenerator[BlobCheck, None]:
    """Check the blobs of one model (`name`), or of every model in the store, one after another."""
    store = service.store
    chosen = [store.get(name)] if name is not None else store.models()
    users: dict[str, list[StoredModel]] = {}
    sizes: dict[str, int] = {}
    for model in chosen:
        for layer in model.manifest.layers:
            users.setdefault(layer.digest, []).append(model)
            sizes[layer.digest] = layer.size
    damaged = 0
    for digest, models in users.items():
        problem = await asyncio.to_thread(store.verify_blob, digest)
        names = tuple(sorted({str(m.name) for m in models}))
        if problem is not None:
            damaged += 1
            log.error("blob %s of %s is damaged: %s", digest, ", ".join(names), problem)
            for model in models:  # a runner that has it loaded keeps serving what it read: stop it
                await service.scheduler.unload(str(store.model_path(model.manifest)))
        yield BlobCheck(digest, sizes[digest], names, problem)
    log.info("verified %d blobs of %d models: %d damaged", len(users), len(chosen), damaged)
