"""Training checkpoints: model and heads, optimizer, stage/step and data position.

A checkpoint is one file written through Fabric (rank 0 for DDP, a full state dict for FSDP)
under a temporary name and moved into place, so a kill never leaves a half-written file.
Everything in it loads with ``weights_only=True``: tensors and plain Python values only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric


def save_checkpoint(fabric: Fabric, path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (modules and optimizers included) to ``path`` atomically.

    Every rank takes part in ``fabric.save`` (FSDP gathers the full state) but only rank 0
    writes, so the staging name is fixed and only rank 0 moves it into place.
    """
    if fabric.global_rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    fabric.save(staging, state)
    fabric.barrier()
    if fabric.global_rank == 0:
        os.replace(staging, path)
    fabric.barrier()


def load_checkpoint(fabric: Fabric, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Restore modules and optimizers in ``state`` from ``path``; return the other entries."""
    return fabric.load(path, state, weights_only=True)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents, memory-mapped (cheap for peeking at its stage and step)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
