"""Training checkpoints: model and heads, optimizer, stage/step, data position and RNG states.

A checkpoint is one file written through Fabric (rank 0 for DDP, a full state dict for FSDP)
under a temporary name and moved into place, so a kill never leaves a half-written file.
Everything in it loads with ``weights_only=True``: tensors and plain Python values only.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric import Fabric


def save_checkpoint(fabric: Fabric, path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (modules and optimizers included) to ``path`` atomically.

    Every rank takes part in ``fabric.save`` (FSDP gathers the full state) but only rank 0
    writes, so the staging name is fixed and only rank 0 moves it into place.
    """
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


def rng_states() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, Python, NumPy) as checkpoint-safe values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np.array(numpy_state["key"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
