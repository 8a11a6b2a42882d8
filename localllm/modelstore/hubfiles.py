"""Which files of a Hub repository a pull takes: the model's (`choose_files`) and its projector's
(`choose_projector`).

The tag picks the model: `latest` is the Q4_K_M file, or the repository's only GGUF; any other tag is a quant
label (`Q8_0`, `iq4_xs`, `F16`, …, case-insensitive) or a file name (`stories260K`, `stories260K.gguf`).
Split GGUFs (`name-00001-of-00003.gguf`) count as one file and are pulled shard by shard, in order.

A repository with multimodal projectors (GGUF files with `mmproj` in their names, as llama.cpp recognises
them) gets one pulled beside the model: the one llama-server's `-hf` picks.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ..domain.errors import InvalidRequest

__all__ = ["choose_files", "choose_projector", "is_projector_file"]

_DEFAULT_QUANT = "q4_k_m"
_QUANT = re.compile(r"I?Q\d+(?:_[A-Z0-9]+)*|TQ\d+_\d+|BF16|F16|F32|F64|FP16|FP32|MXFP4(?:_MOE)?", re.IGNORECASE)
_SHARD = re.compile(r"^(?P<base>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_SPLIT_STEM = re.compile(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", re.IGNORECASE)
_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
_PROJECTOR_MARK = "mmproj"


@dataclass(frozen=True)
class _Candidate:
    """One model in a repository: a GGUF file, or the shards of a split GGUF in order."""

    name: str  # the file name without `.gguf` (and without the shard suffix)
    label: str | None  # the quant label, as written in the file name
    files: tuple[str, ...]

    def matches_name(self, wanted: str) -> bool:
        stems = {self.name} | {posixpath.basename(f)[: -len(".gguf")] for f in self.files}
        return wanted in {s.casefold() for s in stems}


def _quant_label(stem: str) -> str | None:
    """The quant label in a file name (`Llama-3.2-1B-Instruct-Q4_K_M` → `Q4_K_M`), or None."""
    tokens = re.split(r"[-.]", stem)
    for i in range(len(tokens) - 1, -1, -1):
        if _QUANT.fullmatch(tokens[i]):
            prefix = f"{tokens[i - 1]}-" if i > 0 and tokens[i - 1].upper() == "UD" else ""
            return prefix + tokens[i]
    return None


def _candidates(filenames: list[str]) -> list[_Candidate]:
    groups: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for filename in filenames:
        base = posixpath.basename(filename)
        if not base.lower().endswith(".gguf") or is_projector_file(base):
            continue  # a projector is part of a model, never a model of its own
        folder = posixpath.dirname(filename)
        if m := _SHARD.match(base):
            key, index, count = m.group("base"), int(m.group("index")), int(m.group("count"))
        else:
            key, index, count = base[: -len(".gguf")], 1, 1
        groups.setdefault((folder, key), []).append((index, count, filename))
    out = []
    for (_, name), shards in sorted(groups.items()):
        shards.sort()
        count = shards[0][1]
        if [(i, c) for i, c, _ in shards] != [(i, count) for i in range(1, count + 1)]:
            raise InvalidRequest(
                f"the split GGUF {name!r} is incomplete: {len(shards)} of its {count} shards are in the repository",
                field="model",
            )
        out.append(_Candidate(name, _quant_label(name), tuple(f for _, _, f in shards)))
    return out


def _describe(candidates: list[_Candidate]) -> str:
    """The tags that pick each candidate: its quant label where that is unique, else its file name."""
    labels = [c.label.casefold() for c in candidates if c.label]
    tags = [c.label if c.label and labels.count(c.label.casefold()) == 1 else c.name for c in candidates]
    return ", ".join(tags)


def choose_files(filenames: list[str], tag: str) -> list[str]:
    """The repository files (shards in order) that `tag` names; `InvalidRequest` listing the choices otherwise."""
    candidates = _candidates(filenames)
    if not candidates:
        raise InvalidRequest("the repository has no GGUF model files", field="model")
    wanted = tag.casefold()
    if wanted == "latest":
        preferred = [c for c in candidates if c.label and c.label.casefold() == _DEFAULT_QUANT]
        picked = preferred or candidates
        if len(picked) == 1:
            return list(picked[0].files)
        raise InvalidRequest(
            f"the repository has {len(candidates)} GGUF models and none is the default ({_DEFAULT_QUANT.upper()});"
            f" name one as the tag (hf.co/<user>/<repo>:<tag>), one of: {_describe(candidates)}",
            field="model",
        )
    by_label = [c for c in candidates if c.label and c.label.casefold() == wanted]
    if not by_label:
        by_label = [c for c in candidates if c.matches_name(wanted.removesuffix(".gguf"))]
    if not by_label:
        # a file name that is not a model of its own (a projector), asked for explicitly
        exact = [f for f in filenames if posixpath.basename(f).casefold() in {wanted, f"{wanted}.gguf"}]
        if len(exact) == 1 and exact[0].lower().endswith(".gguf"):
            return exact
    if len(by_label) == 1:
        return list(by_label[0].files)
    if by_label:
        raise InvalidRequest(
            f"the tag {tag!r} matches several GGUF models; name one by file name: "
            + ", ".join(c.name for c in by_label),
            field="model",
        )
    raise InvalidRequest(
        f"no GGUF file matches the tag {tag!r}; choose one of: {_describe(candidates)}"
        " (tags are case-insensitive; a file name works too)",
        field="model",
    )


def choose_projector(filenames: list[str], model: str) -> str | None:
    """The projector to pull beside the repository file `model` (its first shard), or None when there is none.

    llama-server's `-hf` rule (llama.cpp common/download.cpp, `find_best_sibling` called by `find_best_mmproj`
    with the keyword "mmproj" and no tag), mirrored: a candidate is a `.gguf` whose path contains "mmproj"
    (case-sensitive, as there) in the model's folder or a folder above it; the one in the deepest folder wins,
    then the one whose quantization bits are closest to the model's (`Q4_K_M` 4, `Q8_0` 8, `F16` 16, `BF16` 16,
    none 0), then the first in the repository's listing.
    """
    model_dir = model.split("/")[:-1]
    model_bits = _quant_bits(model)
    best: str | None = None
    best_depth = best_diff = 0
    for filename in filenames:
        if not filename.endswith(".gguf") or _PROJECTOR_MARK not in filename:
            continue
        folder = filename.split("/")[:-1]
        if folder != model_dir[: len(folder)]:
            continue  # not beside the model, nor in a folder above it
        depth, diff = len(folder), abs(_quant_bits(filename) - model_bits)
        if best is None or depth > best_depth or (depth == best_depth and diff < best_diff):
            best, best_depth, best_diff = filename, depth, diff
    return best


def _quant_bits(path: str) -> int:
    """The bits of the quant label ending a GGUF's name, as llama.cpp's `extract_quant_bits` reads them: the
    first number in the last `-`/`.`-separated word (shard suffix and `.gguf` dropped); 0 when there is none."""
    if not path.endswith(".gguf"):
        return 0
    prefix = path[: -len(".gguf")]
    if split := _SPLIT_STEM.match(prefix):
        prefix = split.group(1)
    tag = _TAG.search(prefix)
    digits = re.search(r"[0-9]+", tag.group(1)) if tag else None
    return int(digits.group(0)) if digits else 0


def is_projector_file(filename: str) -> bool:
    """Whether a repository file is a projector, never a model of its own (`mmproj` in its name)."""
    return _PROJECTOR_MARK in posixpath.basename(filename).lower()
