"""Span masking of encoder frames, as fairseq's ``compute_mask_indices`` (static spans)."""

from __future__ import annotations

import numpy as np


def compute_mask_indices(
    shape: tuple[int, int],
    padding_mask: np.ndarray | None = None,
    mask_prob: float = 0.8,
    mask_length: int = 5,
    min_masks: int = 2,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Boolean ``[B, T]`` mask of overlapping fixed-length spans, equal count in every row.

    Per row, ``int(mask_prob·T/mask_length + U[0,1))`` span starts (at least ``min_masks``) are
    drawn without replacement from ``[0, T − mask_length)``; each span covers ``mask_length``
    frames and spans may overlap. Rows are then subsampled to the smallest masked count, so a
    batch has the same number of masked frames per row. ``padding_mask`` (True = padding, at
    the end of a row) keeps spans inside each row's real length.
    """
    rng = rng if rng is not None else np.random.default_rng()
    batch, frames = shape
    if mask_length < 1 or not 0.0 <= mask_prob <= 1.0:
        raise ValueError(
            f"need mask_length ≥ 1 and 0 ≤ mask_prob ≤ 1, got {mask_length}, {mask_prob}"
        )
    # fairseq draws one count for unpadded rows before the loop; keep that draw order.
    shared_count = max(min_masks, int(mask_prob * frames / mask_length + rng.random()))
    rows: list[np.ndarray] = []
    for row in range(batch):
        if padding_mask is not None:
            size = frames - int(np.asarray(padding_mask[row]).sum())
            count = max(min_masks, int(mask_prob * size / mask_length + rng.random()))
        else:
            size, count = frames, shared_count
        span = mask_length
        if size - span <= count:  # too short for that many distinct starts: shrink the range
            span = size - count - 1
        starts = rng.choice(size - span, count, replace=False)
        indices = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)
        rows.append(np.unique(indices[indices < size]))
    mask = np.zeros((batch, frames), dtype=bool)
    fewest = min(len(r) for r in rows) if rows else 0
    for row, indices in enumerate(rows):
        if len(indices) > fewest:
            indices = rng.choice(indices, fewest, replace=False)
        mask[row, indices] = True
    return mask
