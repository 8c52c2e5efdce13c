"""Claims about two models, with their uncertainty and a verdict.

A claim says that model A scores at least ``margin`` below model B or better (``margin`` 0:
that A beats B) on the average of some tasks' metric. Its estimate is **paired**: both models
are scored on the same test tracks, replica r of A against replica r of B (the same
pre-training seed down the chain; a model run once, e.g. hand-made features, pairs with every
replica). Two things vary between runs, and the interval holds both:

- the pre-training seed: the spread of the per-replica differences ``d_r``, as a Student-t
  interval of their mean (``t`` with R − 1 degrees of freedom, wide when R is small);
- the test tracks: the spread of the mean difference over bootstrap resamples of each task's
  test tracks, drawn once and shared by both models and every replica.

The two are independent, so the interval's half-width is their 95% half-widths added in
quadrature. The verdict rule, with threshold −margin:

- **supported** when the whole interval lies above the threshold,
- **contradicted** when it lies wholly below it,
- **inconclusive** otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from culturemert.evaluate.metrics import (
    macro_average_precision,
    macro_roc_auc,
    resampled_metric,
)
from culturemert.evaluate.results import Predictions

METRIC_FUNCTIONS = {"roc_auc": macro_roc_auc, "map": macro_average_precision}
VERDICTS = ("supported", "contradicted", "inconclusive")
LEVEL = 0.95

#: One model's runs: for each replica, its test predictions by task.
Replicas = Sequence[dict[str, Predictions]]


@dataclass
class ClaimSpec:
    """What is claimed: ``model`` vs ``reference`` on the mean over ``tasks`` of ``metrics``."""

    name: str
    model: str
    reference: str
    tasks: list[str]
    metrics: list[str] = field(default_factory=lambda: ["roc_auc"])
    margin: float = 0.0  # in the metric's units (fractions): how far below still counts

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRIC_FUNCTIONS))
        if unknown or not self.metrics:
            raise ValueError(
                f"claim {self.name!r}: metrics must be some of {', '.join(METRIC_FUNCTIONS)}, "
                f"got {self.metrics}"
            )
        if not self.tasks:
            raise ValueError(f"claim {self.name!r}: list at least one task")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"claim {self.name!r}: margin must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class Estimate:
    """A paired difference (A − B, fraction units), its 95% interval and what it is made of."""

    difference: float
    low: float
    high: float
    per_replica: tuple[float, ...]
    seed_half_width: float
    track_half_width: float


def verdict(low: float, high: float, margin: float = 0.0) -> str:
    """The rule: supported above −margin, contradicted below it, inconclusive across it."""
    if low > -margin:
        return "supported"
    if high < -margin:
        return "contradicted"
    return "inconclusive"


def paired_difference(
    model: Replicas,
    reference: Replicas,
    tasks: Sequence[str],
    metrics: Sequence[str] = ("roc_auc",),
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """The paired estimate of ``model − reference`` on the mean of ``metrics`` over ``tasks``,
    with its interval over seeds and test tracks (see the module docstring)."""
    pairs = _pairs(model, reference)
    rng = np.random.default_rng(seed)
    per_replica = np.zeros(len(pairs))
    resampled = np.zeros(resamples)
    for task in tasks:
        first = _task(pairs[0][0], task)
        rows = torch.from_numpy(
            rng.integers(0, len(first.track_ids), (resamples, len(first.labels)))
        )
        for r, (a, b) in enumerate(pairs):
            a, b = _task(a, task), _task(b, task)
            if list(a.track_ids) != list(b.track_ids) or list(a.track_ids) != list(first.track_ids):
                raise ValueError(f"{task}: the two models were not scored on the same test tracks")
            labels = torch.as_tensor(a.labels)
            scores_a, scores_b = torch.as_tensor(a.scores), torch.as_tensor(b.scores)
            share = 1 / (len(tasks) * len(metrics))
            for metric in metrics:
                score = METRIC_FUNCTIONS[metric]
                whole = score(scores_a, labels) - score(scores_b, labels)
                per_replica[r] += share * float(whole)
                drawn = resampled_metric(score, scores_a, labels, rows) - resampled_metric(
                    score, scores_b, labels, rows
                )
                resampled += share / len(pairs) * np.nan_to_num(drawn)
    z = stats.norm.ppf(0.5 + LEVEL / 2)
    track_half = float(z * resampled.std(ddof=1))
    seed_half = 0.0
    if len(pairs) > 1:
        t = stats.t.ppf(0.5 + LEVEL / 2, df=len(pairs) - 1)
        seed_half = float(t * per_replica.std(ddof=1) / np.sqrt(len(pairs)))
    difference = float(per_replica.mean())
    half = float(np.hypot(seed_half, track_half))
    return Estimate(
        difference,
        difference - half,
        difference + half,
        tuple(float(d) for d in per_replica),
        seed_half,
        track_half,
    )


def _pairs(model: Replicas, reference: Replicas) -> list[tuple[dict, dict]]:
    """Replica r of one model against replica r of the other; a single run pairs with all."""
    if not model or not reference:
        raise ValueError("each model needs at least one run")
    count = max(len(model), len(reference))
    if {len(model), len(reference)} - {1, count}:
        raise ValueError(
            f"cannot pair {len(model)} runs with {len(reference)}: give equal counts, or one"
        )
    return [(model[r % len(model)], reference[r % len(reference)]) for r in range(count)]


def _task(run: dict[str, Predictions], task: str) -> Predictions:
    try:
        return run[task]
    except KeyError:
        raise ValueError(f"no test predictions for task {task!r} (have {', '.join(run)})") from None


def judge(claim: ClaimSpec, runs: dict[str, Replicas], **options) -> dict:
    """One claim's row for ``claims.json``: its models, tasks, estimate, interval and verdict
    (values in points, i.e. percent)."""
    for name in (claim.model, claim.reference):
        if name not in runs:
            raise ValueError(f"claim {claim.name!r}: no model {name!r} (have {', '.join(runs)})")
    estimate = paired_difference(
        runs[claim.model], runs[claim.reference], claim.tasks, claim.metrics, **options
    )

    def points(value: float) -> float:
        return round(100 * value, 2)

    return {
        "name": claim.name,
        "model": claim.model,
        "reference": claim.reference,
        "tasks": list(claim.tasks),
        "metrics": list(claim.metrics),
        "margin": points(claim.margin),
        "estimate": points(estimate.difference),
        "interval": [points(estimate.low), points(estimate.high)],
        "per_replica": [points(d) for d in estimate.per_replica],
        "half_widths": {
            "seeds": points(estimate.seed_half_width),
            "tracks": points(estimate.track_half_width),
        },
        "replicas": len(estimate.per_replica),
        "verdict": verdict(estimate.low, estimate.high, claim.margin),
    }
