"""Pre-training heads stored beside an encoder: ``heads.safetensors``.

The tensors carry the names of :class:`culturemert.pretrain.objective.PretrainingHeads`
(``projection.*``, ``label_embeddings``, ``cqt.*``); the safetensors metadata records what a
recipe must agree with before training from them: the codebook sizes of the labels they
predict, the projection width, the CQT bins and the temperature they were trained at.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from culturemert.atomic import atomic_path

HEADS_FILE = "heads.safetensors"


class HeadsFileError(ValueError):
    """A heads file that cannot be read; the message names the file and the field."""


@dataclass
class Heads:
    """Pre-training heads and the label facts they were trained on."""

    tensors: dict[str, torch.Tensor]
    codebook_sizes: list[int]
    final_dim: int
    cqt_bins: int | None = None  # None: no CQT head
    logit_temp: float = 0.1
    labels: list[str] = field(default_factory=list)  # the teacher's label names, when known
    source: str = ""  # where the heads came from

    def metadata(self) -> dict[str, str]:
        """The facts as safetensors metadata (strings only)."""
        return {
            "codebook_sizes": json.dumps(self.codebook_sizes),
            "final_dim": str(self.final_dim),
            "cqt_bins": json.dumps(self.cqt_bins),
            "logit_temp": repr(self.logit_temp),
            "labels": json.dumps(self.labels),
            "source": self.source,
        }


def save_heads(heads: Heads, directory: str | os.PathLike) -> Path:
    """Write ``directory/heads.safetensors`` atomically."""
    from safetensors.torch import save_file

    path = Path(directory) / HEADS_FILE
    tensors = {name: tensor.detach().contiguous() for name, tensor in heads.tensors.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=heads.metadata())
    return path


def read_heads(directory: str | os.PathLike) -> Heads | None:
    """The heads stored in ``directory``, or None when it holds none."""
    from safetensors import safe_open

    path = Path(directory) / HEADS_FILE
    if not path.is_file():
        return None
    try:  # one opening for the facts and the tensors
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise HeadsFileError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        return Heads(
            tensors=tensors,
            codebook_sizes=[int(size) for size in json.loads(meta["codebook_sizes"])],
            final_dim=int(meta["final_dim"]),
            cqt_bins=json.loads(meta.get("cqt_bins", "null")),
            logit_temp=float(meta.get("logit_temp", "0.1")),
            labels=list(json.loads(meta.get("labels", "[]"))),
            source=meta.get("source", ""),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise HeadsFileError(
            f"{path}: metadata field {error} missing or malformed (expected codebook_sizes, "
            "final_dim, cqt_bins as written by `culturemert convert`)"
        ) from None
