"""What every discrete teacher offers, and how its version hash is computed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np


class Teacher(Protocol):
    """A frozen labeller: 24 kHz waveform ``[L]`` → int64 codes ``[codebooks, T]``, T = encoder frames."""

    name: str
    hash: str
    codebook_sizes: list[int]

    def __call__(self, waveform: np.ndarray) -> np.ndarray: ...


def teacher_hash(kind: str, params: dict[str, Any], arrays: Iterable[np.ndarray] = ()) -> str:
    """sha256 over a teacher's kind, its parameters (as sorted JSON) and its weights, in order."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "params": params}, sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
