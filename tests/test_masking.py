"""Span masking against the statistics written out from fairseq's static algorithm."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from culturemert.pretrain.masking import compute_mask_indices


def expected_masked_fraction(frames: int, spans: int, length: int) -> float:
    """E[masked share] for ``spans`` distinct starts uniform on [0, T − length), span ``length``."""
    starts = frames - length
    total = 0.0
    for t in range(frames):
        covering = min(t, starts - 1) - max(0, t - length + 1) + 1  # starts whose span covers t
        covering = max(covering, 0)
        total += 1 - comb(starts - covering, spans) / comb(starts, spans)
    return total / frames


def runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a boolean row."""
    edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_masked_share_matches_the_written_out_expectation():
    frames, length = 374, 5
    # int(0.8·374/5 + U) = int(59.84 + U): 60 spans with probability 0.84, else 59.
    expected = 0.16 * expected_masked_fraction(
        frames, 59, length
    ) + 0.84 * expected_masked_fraction(frames, 60, length)
    # Distinct starts cover more than independent draws would (≈ 55.7%): exactly 58.25%.
    assert abs(expected - 0.5825) < 0.0005
    rng = np.random.default_rng(0)
    shares = [compute_mask_indices((1, frames), rng=rng).mean() for _ in range(600)]
    assert abs(np.mean(shares) - expected) < 0.005


def test_spans_are_whole_and_start_before_t_minus_length():
    rng = np.random.default_rng(1)
    for _ in range(50):
        mask = compute_mask_indices((1, 374), rng=rng)[0]
        assert all(
            r >= 5 for r in runs(mask)
        )  # unions of whole 5-frame spans (one row: no subsampling)
        assert not mask[-1]  # last start is T − 6, so the span ends at T − 2
        # at most 60 spans of 5 frames, at least min(59 distinct starts) worth of coverage
        assert mask.sum() <= 300


def test_rows_share_one_masked_count_and_padding_is_never_masked():
    rng = np.random.default_rng(2)
    padding = np.zeros((4, 200), dtype=bool)
    padding[1, 150:] = True
    padding[3, 100:] = True
    mask = compute_mask_indices((4, 200), padding, rng=rng)
    counts = mask.sum(axis=1)
    assert (counts == counts[0]).all() and counts[0] > 0
    assert not (mask & padding).any()


def test_min_masks_applies_to_short_rows():
    mask = compute_mask_indices((3, 8), rng=np.random.default_rng(3))  # int(0.8·8/5 + U) ≤ 2
    assert (mask.sum(axis=1) >= 5).all()  # two spans, at least one full span's frames


def test_seeded_generator_repeats():
    first = compute_mask_indices((2, 100), rng=np.random.default_rng(7))
    second = compute_mask_indices((2, 100), rng=np.random.default_rng(7))
    assert (first == second).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mask_length"):
        compute_mask_indices((1, 10), mask_length=0)
