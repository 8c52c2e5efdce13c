"""Merge methods against their formulas written out with plain torch."""

from __future__ import annotations

import pytest
import torch
from merge_reference import reference_ties

from culturemert.merge.methods import (
    MergeOptions,
    dare,
    kth_largest_magnitudes,
    linear,
    task_arithmetic,
    ties,
)


@pytest.fixture
def tensors() -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, 4, generator=generator)
    models = [base + 0.1 * torch.randn(6, 5, 4, generator=generator) for _ in range(3)]
    return base, models


def test_task_arithmetic_matches_formula(tensors):
    base, models = tensors
    merged = task_arithmetic(base, models, MergeOptions(lam=0.2))
    expected = base + 0.2 * sum(m - base for m in models)
    torch.testing.assert_close(merged, expected)


def test_task_arithmetic_per_model_lambda_and_weights(tensors):
    base, models = tensors
    options = MergeOptions(lam=(0.1, 0.5, 1.0), weights=(2.0, 1.0, -1.0))
    merged = task_arithmetic(base, models, options)
    expected = base + 0.2 * (models[0] - base) + 0.5 * (models[1] - base) - (models[2] - base)
    torch.testing.assert_close(merged, expected)


def test_methods_leave_inputs_untouched(tensors):
    base, models = tensors
    copies = [base.clone()] + [m.clone() for m in models]
    for method in (task_arithmetic, ties, dare, linear):
        method(base, models, MergeOptions(lam=0.7, combine="ties"))
    for original, copy in zip([base, *models], copies, strict=True):
        assert torch.equal(original, copy)


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
def test_ties_matches_paper_reference(tensors, density):
    base, models = tensors
    merged = ties(base, models, MergeOptions(lam=0.8, density=density))
    torch.testing.assert_close(merged, reference_ties(base, models, density, 0.8))


def test_weighted_ties_matches_formula(tensors):
    base, models = tensors
    weights = (2.0, 1.0, 0.5)
    merged = ties(base, models, MergeOptions(lam=1.0, density=0.4, weights=weights))
    taus = [m - base for m in models]
    k = round(0.4 * base.numel())
    trimmed = []
    for tau in taus:
        kth = tau.abs().reshape(-1).topk(k).values[-1]
        trimmed.append(torch.where(tau.abs() >= kth, tau, 0.0))
    sign = torch.sign(sum(w * t for w, t in zip(weights, trimmed, strict=True)))
    agree = [(torch.sign(t) == sign) & (t != 0) for t in trimmed]
    numerator = sum(w * t * a for w, t, a in zip(weights, trimmed, agree, strict=True))
    denominator = sum(w * a.float() for w, a in zip(weights, agree, strict=True))
    expected = base + torch.where(denominator > 0, numerator / denominator, 0.0)
    torch.testing.assert_close(merged, expected)


def test_ties_uses_given_thresholds(tensors):
    base, models = tensors
    thresholds = (0.05, 0.1, 0.0)
    merged = ties(base, models, MergeOptions(lam=1.0, thresholds=thresholds))
    trimmed_models = [
        base + torch.where((m - base).abs() >= t, m - base, 0.0)
        for m, t in zip(models, thresholds, strict=True)
    ]
    torch.testing.assert_close(merged, reference_ties(base, trimmed_models, 1.0, 1.0))


def test_ties_refuses_per_model_lambda(tensors):
    base, models = tensors
    with pytest.raises(ValueError, match="single λ"):
        ties(base, models, MergeOptions(lam=(1.0, 1.0, 1.0)))


def dropped(base, models, drop, seed):
    generator = torch.Generator().manual_seed(seed)
    return [
        (m - base) * (torch.rand(base.shape, generator=generator) >= drop) / (1 - drop)
        for m in models
    ]


def test_dare_task_arithmetic_matches_formula(tensors):
    base, models = tensors
    options = MergeOptions(lam=0.5, drop=0.3, seed=7, weights=(1.0, 2.0, 1.0))
    merged = dare(base, models, options)
    taus = dropped(base, models, 0.3, 7)
    expected = base + 0.5 * (taus[0] + 2 * taus[1] + taus[2])
    torch.testing.assert_close(merged, expected)


def test_dare_ties_is_ties_on_dropped_vectors(tensors):
    base, models = tensors
    options = MergeOptions(lam=1.0, drop=0.5, seed=3, combine="ties", density=0.5)
    merged = dare(base, models, options)
    dropped_models = [base + tau for tau in dropped(base, models, 0.5, 3)]
    torch.testing.assert_close(merged, reference_ties(base, dropped_models, 0.5, 1.0))


def test_dare_drops_about_p_and_rescales_survivors():
    base = torch.zeros(200_000)
    model = torch.ones(200_000)
    merged = dare(base, [model], MergeOptions(lam=1.0, drop=0.9, seed=1))
    survivors = merged[merged != 0]
    assert torch.allclose(survivors, torch.full_like(survivors, 10.0))
    assert abs(survivors.numel() / 200_000 - 0.1) < 0.005
    again = dare(base, [model], MergeOptions(lam=1.0, drop=0.9, seed=1))
    assert torch.equal(merged, again)


def test_linear_is_weighted_average(tensors):
    base, models = tensors
    merged = linear(base, models, MergeOptions(weights=(1.0, 3.0, 0.0)))
    torch.testing.assert_close(merged, (models[0] + 3 * models[1]) / 4)


def test_kth_largest_magnitudes_matches_topk():
    generator = torch.Generator().manual_seed(0)
    chunks = [
        torch.randn(1000, generator=generator),
        torch.zeros(300),
        torch.full((50,), -0.5),  # ties at the boundary
        torch.randn(7, 9, generator=generator) * 1e-6,
        torch.tensor([float("inf"), -3.0]),
    ]
    second = [chunk * 2 - 1 for chunk in chunks]
    everything = torch.cat([c.reshape(-1) for c in chunks]).abs()
    everything2 = torch.cat([c.reshape(-1) for c in second]).abs()
    for k in (1, 2, 57, 700, 1200, everything.numel()):
        found = kth_largest_magnitudes(lambda: zip(chunks, second, strict=True), [k, k])
        assert found[0] == everything.topk(k).values[-1].item()
        assert found[1] == everything2.topk(k).values[-1].item()


def test_kth_largest_magnitudes_rejects_k_beyond_count():
    with pytest.raises(ValueError, match="11-th largest of 10"):
        kth_largest_magnitudes(lambda: [[torch.ones(10)]], [11])
