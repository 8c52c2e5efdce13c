"""In-batch noise mixing: what gets added, how often, and from where."""

from __future__ import annotations

import numpy as np
import torch

from culturemert.pretrain.noise import mix_in_batch_noise


def runs(row: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True."""
    edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def batch(clips: int = 3, samples: int = 30000, seed: int = 0) -> torch.Tensor:
    return torch.randn(clips, samples, generator=torch.Generator().manual_seed(seed))


def test_one_segment_is_a_slice_of_the_other_clips_added_at_full_volume():
    clean = batch()
    generator = torch.Generator().manual_seed(1)
    mixed = mix_in_batch_noise(clean, prob=1.0, segments=(1, 1), generator=generator)
    for index in range(3):
        added = (mixed[index] - clean[index]).numpy()
        (start, end), *rest = runs(np.abs(added) > 0)
        assert not rest and 12000 <= end - start <= 24000
        pool = torch.cat([clean[:index], clean[index + 1 :]]).reshape(-1).numpy()
        offsets = np.flatnonzero(np.isclose(pool, added[start], atol=1e-6))
        assert any(
            np.allclose(pool[o : o + end - start], added[start:end], atol=1e-5) for o in offsets
        )


def test_segment_count_and_lengths_stay_in_range():
    clean = torch.zeros(2, 96000)
    clean[1] = 1.0  # clip 0's noise is all ones: every added sample shows
    counts = []
    for seed in range(40):
        mixed = mix_in_batch_noise(clean, prob=1.0, generator=torch.Generator().manual_seed(seed))
        added = mixed[0].numpy()
        assert set(np.unique(added)) <= {0.0, 1.0, 2.0, 3.0}  # up to 3 overlapping segments
        total = added.sum()
        assert 12000 <= total <= 3 * 24000
        counts.append(round(total / 18000))
    assert min(counts) <= 1 and max(counts) >= 3  # 1 to 3 segments of about 0.75 s on average


def test_mixing_probability_is_prob_not_one_minus_prob():
    generator = torch.Generator().manual_seed(2)
    clean = batch(clips=3, samples=12000)  # each clip's pool (24000 samples) fits a segment
    mixed_share = np.mean(
        [
            (mix_in_batch_noise(clean, prob=0.3, generator=generator) != clean).any(dim=1).numpy()
            for _ in range(200)
        ]
    )
    assert abs(mixed_share - 0.3) < 0.06  # 600 draws: 3 standard deviations


def test_single_clip_batches_and_zero_probability_stay_clean():
    clean = batch()
    assert torch.equal(mix_in_batch_noise(clean[:1], prob=1.0), clean[:1])
    assert torch.equal(mix_in_batch_noise(clean, prob=0.0), clean)


def test_input_is_untouched_and_seeds_repeat():
    clean = batch()
    before = clean.clone()
    first = mix_in_batch_noise(clean, generator=torch.Generator().manual_seed(5))
    second = mix_in_batch_noise(clean, generator=torch.Generator().manual_seed(5))
    assert torch.equal(clean, before)
    assert torch.equal(first, second)
