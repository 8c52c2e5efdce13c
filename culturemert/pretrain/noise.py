"""In-batch noise mixing: clips get short segments of the other clips in the batch added."""

from __future__ import annotations

import torch


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """One integer uniform on ``[low, high]`` (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def mix_in_batch_noise(
    waveforms: torch.Tensor,
    *,
    prob: float = 0.5,
    segments: tuple[int, int] = (1, 3),
    segment_samples: tuple[int, int] = (12000, 24000),
    volume: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A noisy copy of ``[B, L]`` clean clips, as MERT's ``inbatch_noise_augment``.

    Each clip is mixed with probability ``prob`` (MERT writes ``rand > mixture_prob``, so its
    ``mixture_prob`` is one minus this). A mixed clip gets 1–3 segments of 0.5–1 s (at 24 kHz)
    added at random positions, cut at random offsets from the other clips of the batch
    concatenated; no SNR control. A clip stays clean when the batch has one clip or the clips
    are too short for a segment. Random draws come from ``generator`` (CPU), so runs repeat.
    """
    if waveforms.dim() != 2:
        raise ValueError(
            f"expected waveforms of shape [batch, samples], got {tuple(waveforms.shape)}"
        )
    batch, length = waveforms.shape
    clean = waveforms.detach()
    mixed = clean.clone()
    shortest, longest = segment_samples
    for index in range(batch):
        draw = torch.rand(1, generator=generator).item()
        if draw >= prob or batch < 2:
            continue
        pool = torch.cat([clean[:index], clean[index + 1 :]]).reshape(-1)
        if pool.numel() < longest or length < shortest:
            continue  # MERT's try/except leaves such clips clean
        count = _randint(segments[0], segments[1], generator)
        for _ in range(count):
            start = _randint(0, pool.numel() - longest, generator)
            duration = _randint(shortest, min(longest, length), generator)
            position = _randint(0, length - duration, generator)
            mixed[index, position : position + duration] += volume * pool[start : start + duration]
    return mixed
