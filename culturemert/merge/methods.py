"""Merge methods: pure functions over one tensor of the base and the same tensor of each model.

Every method has the signature ``method(base, models, options) -> merged`` and never modifies
its inputs. Notation: τ_i = θ_i − θ_base (task vector), w_i per-model weight, λ global scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Radix selection splits a float32 bit pattern into a high and a low 16-bit half.
_HALF_BITS = 16
_HALF_BINS = 1 << _HALF_BITS
_MAGNITUDE_BINS = 1 << 15  # the high half without its sign bit


@dataclass(frozen=True)
class MergeOptions:
    """Hyperparameters of the merge methods; each method reads only the ones it uses."""

    lam: float | tuple[float, ...] = 1.0  # λ: one global scale, or one per model
    weights: tuple[float, ...] | None = None  # w_i, one per model (default: all 1)
    density: float = 0.2  # TIES: fraction of each task vector's entries kept
    thresholds: tuple[float, ...] | None = None  # TIES: per-model |τ| cut-offs of a global trim
    drop: float = 0.5  # DARE: probability of dropping each task-vector entry
    combine: str = "task_arithmetic"  # DARE: combine the survivors as task_arithmetic or ties
    seed: int = 0  # DARE: seed of this tensor's drop masks


def task_vectors(base: Tensor, models: Sequence[Tensor]) -> list[Tensor]:
    """τ_i = θ_i − θ_base for every model."""
    return [model - base for model in models]


def model_weights(options: MergeOptions, count: int) -> tuple[float, ...]:
    """The per-model weights w_i (all 1 when unset)."""
    return options.weights if options.weights is not None else (1.0,) * count


def task_arithmetic(base: Tensor, models: Sequence[Tensor], options: MergeOptions) -> Tensor:
    """θ = θ_base + Σ_i λ_i·w_i·(θ_i − θ_base) (λ_i = λ when a single scale is given).

    Evaluated as (1 − Σ_i c_i)·θ_base + Σ_i c_i·θ_i, c_i = λ_i·w_i: the same affine combination
    in one pass per model instead of two, equal up to float rounding.
    """
    coefficients = _coefficients(options, len(models))
    merged = base.mul(1.0 - sum(coefficients))
    for model, coefficient in zip(models, coefficients, strict=True):
        merged.add_(model, alpha=coefficient)
    return merged


def ties(base: Tensor, models: Sequence[Tensor], options: MergeOptions) -> Tensor:
    """TIES: trim each τ_i to its largest magnitudes, elect a sign per entry, disjoint mean, × λ."""
    return _ties_from_vectors(base, task_vectors(base, models), options)


def dare(base: Tensor, models: Sequence[Tensor], options: MergeOptions) -> Tensor:
    """DARE: drop τ entries with probability p, rescale by 1/(1−p), combine as TA or TIES."""
    vectors = dare_vectors(base, models, options)
    if options.combine == "ties":
        return _ties_from_vectors(base, vectors, options)
    return _add_scaled(base, vectors, _coefficients(options, len(models)))


def linear(base: Tensor, models: Sequence[Tensor], options: MergeOptions) -> Tensor:
    """Model soup: θ = Σ_i w_i·θ_i / Σ_i w_i (the base only fixes shape and dtype)."""
    weights = model_weights(options, len(models))
    total = sum(weights)
    merged = torch.zeros_like(base)
    for model, weight in zip(models, weights, strict=True):
        merged.add_(model, alpha=weight / total)
    return merged


METHODS: dict[str, Callable[[Tensor, Sequence[Tensor], MergeOptions], Tensor]] = {
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare": dare,
    "linear": linear,
}


def dare_vectors(base: Tensor, models: Sequence[Tensor], options: MergeOptions) -> list[Tensor]:
    """τ_i·m_i/(1−p), m_i = [u ≥ p], u ~ U[0,1) drawn per model in order from ``options.seed``."""
    generator = torch.Generator().manual_seed(options.seed)
    keep = 1.0 - options.drop
    vectors = []
    for vector in task_vectors(base, models):
        kept = torch.rand(vector.shape, generator=generator, dtype=vector.dtype) >= options.drop
        vectors.append(vector.mul_(kept).div_(keep))
    return vectors


def trims_by_magnitude(method: str, options: MergeOptions) -> bool:
    """Whether ``method`` keeps only the largest task-vector magnitudes (TIES trimming)."""
    return method == "ties" or (method == "dare" and options.combine == "ties")


def trimmed_vectors(
    method: str, base: Tensor, models: Sequence[Tensor], options: MergeOptions
) -> list[Tensor]:
    """The vectors ``method`` trims by magnitude, for computing whole-model thresholds."""
    return dare_vectors(base, models, options) if method == "dare" else task_vectors(base, models)


def keep_count(numel: int, density: float) -> int:
    """How many entries a trim at ``density`` keeps out of ``numel`` (at least one)."""
    return max(1, round(density * numel))


def kth_largest_magnitudes(
    streams: Callable[[], Iterable[Sequence[Tensor]]], ks: Sequence[int]
) -> tuple[float, ...]:
    """Exact k-th largest |x| of several streams of tensors, by a two-pass radix selection.

    ``streams()`` is called twice and yields, chunk after chunk, one tensor per stream. The bit
    patterns of non-negative float32 values order like the values, so a histogram of the high
    16 bits of |x| finds the bin holding the k-th largest, and a histogram of the low 16 bits
    inside that bin pins its exact value. Like ``kthvalue`` this is selection, not a sort; its
    memory is two 2**16-bin histograms per stream whatever the stream's length, so a whole
    model's threshold streams tensor by tensor.
    """
    # In numpy: the bit views need no copy, and the histograms are tiny arrays, where torch's
    # per-call overhead would dominate.
    high_counts = [np.zeros(_HALF_BINS, dtype=np.int64) for _ in ks]  # high half, sign bit kept
    for chunks in streams():
        for counts, chunk in zip(high_counts, chunks, strict=True):
            counts += np.bincount(_halves(chunk)[0], minlength=_HALF_BINS)
    magnitude_counts = [
        counts[:_MAGNITUDE_BINS] + counts[_MAGNITUDE_BINS:] for counts in high_counts
    ]
    high_bins, high_ranks = zip(*map(_select_bin, magnitude_counts, ks), strict=True)

    low_counts = [np.zeros(_HALF_BINS, dtype=np.int64) for _ in ks]
    for chunks in streams():
        for counts, chunk, high_bin in zip(low_counts, chunks, high_bins, strict=True):
            high, low = _halves(chunk)
            counts += np.bincount(low[(high & 0x7FFF) == high_bin], minlength=_HALF_BINS)
    thresholds = []
    for counts, high_bin, rank in zip(low_counts, high_bins, high_ranks, strict=True):
        low_bin, _ = _select_bin(counts, rank)
        pattern = np.array([(high_bin << _HALF_BITS) | low_bin], dtype=np.uint32)
        thresholds.append(float(pattern.view(np.float32)[0]))
    return tuple(thresholds)


def _halves(x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """High and low 16-bit halves of x's float32 bit patterns, as views (no copy)."""
    halves = x.detach().float().cpu().contiguous().reshape(-1).numpy().view(np.uint16)
    return halves[1::2], halves[0::2]  # little-endian: each float is (low half, high half)


def _select_bin(counts: np.ndarray, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest value, and that value's rank (1 = largest) inside it."""
    at_or_above = np.cumsum(counts[::-1])[::-1]
    total = int(at_or_above[0])
    if not 1 <= k <= total:
        raise ValueError(f"cannot take the {k}-th largest of {total} values")
    index = int(np.flatnonzero(at_or_above >= k)[-1])
    above = int(at_or_above[index + 1]) if index + 1 < len(counts) else 0
    return index, k - above


def _coefficients(options: MergeOptions, count: int) -> list[float]:
    """λ_i·w_i for every model."""
    lams = options.lam if isinstance(options.lam, tuple) else (options.lam,) * count
    if len(lams) != count:
        raise ValueError(f"{len(lams)} λ values for {count} models")
    return [lam * weight for lam, weight in zip(lams, model_weights(options, count), strict=True)]


def _add_scaled(base: Tensor, vectors: Sequence[Tensor], coefficients: Sequence[float]) -> Tensor:
    merged = base.clone()
    for vector, coefficient in zip(vectors, coefficients, strict=True):
        merged.add_(vector, alpha=coefficient)
    return merged


def _ties_from_vectors(base: Tensor, vectors: list[Tensor], options: MergeOptions) -> Tensor:
    """Trim, elect, disjoint mean over task vectors (which this function may overwrite).

    Weights scale the vectors before the sign election and the mean divides by the summed
    weights of the agreeing models, so with all weights 1 this is the TIES paper's count mean.
    """
    if isinstance(options.lam, tuple):
        raise ValueError("TIES takes a single λ, not one per model")
    weights = model_weights(options, len(vectors))
    thresholds = options.thresholds
    if thresholds is None:
        k = keep_count(base.numel(), options.density)
        thresholds = kth_largest_magnitudes(lambda: [vectors], [k] * len(vectors))
    for vector, threshold in zip(vectors, thresholds, strict=True):
        vector.masked_fill_(vector.abs() < threshold, 0.0)
    mass = torch.zeros_like(base)
    for vector, weight in zip(vectors, weights, strict=True):
        mass.add_(vector, alpha=weight)
    elected = mass.sign_()
    total = torch.zeros_like(base)
    agreeing_weight = torch.zeros_like(base)
    for vector, weight in zip(vectors, weights, strict=True):
        agrees = vector.mul(elected).gt_(0)  # non-zero and of the elected sign (as 1.0 / 0.0)
        total.addcmul_(vector, agrees, value=weight)
        agreeing_weight.add_(agrees, alpha=weight)
    # Where no model agrees the total is 0, so any positive denominator gives 0.
    mean = total.div_(agreeing_weight.clamp_min_(torch.finfo(base.dtype).tiny))
    return base + mean.mul_(options.lam)
