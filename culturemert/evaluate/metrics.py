"""Tagging metrics: macro ROC-AUC, macro AP (mAP), micro- and macro-F1, per tag and per family.

A tag without both a positive and a negative example in the evaluated split has no ROC-AUC,
and scoring it 0 (as torchmetrics does) drags the macro average down on small test sets. Such
tags are left out of every average, F1 included, and their number is reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

HEADLINE = ("roc_auc", "map", "micro_f1", "macro_f1")
_BOOTSTRAP_ELEMENTS = 1 << 20  # resampled scores ranked at once: bounds the bootstrap's memory


def tag_family(tag: str) -> str:
    """The family of a ``family--tag`` string (``"tag"`` when it has none)."""
    return tag.split("--", 1)[0] if "--" in tag else "tag"


def _scores(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, float]:
    y_pred = (y_score >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, y_score, average="macro")),
        "map": float(average_precision_score(y_true, y_score, average="macro")),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def tagging_metrics(
    y_true: np.ndarray, y_score: np.ndarray, tags: Sequence[str], threshold: float = 0.5
) -> dict:
    """Metrics of probabilities ``y_score [n, t]`` against 0/1 ``y_true [n, t]``.

    Returns ``roc_auc``, ``map``, ``micro_f1``, ``macro_f1`` (fractions), ``per_tag``
    (tag -> ``roc_auc``, ``map``, ``f1``, ``positives``), ``per_family`` (family -> the four
    averages and ``tags``), ``excluded_tags`` (count) and ``excluded`` (their names).
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape or y_true.shape[1] != len(tags):
        raise ValueError(
            f"y_true {y_true.shape} and y_score {y_score.shape} must both be [n, {len(tags)}]"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    y_true = y_true.astype(int)
    positives = y_true.sum(axis=0)
    kept = np.flatnonzero((positives > 0) & (positives < len(y_true)))
    excluded = [tag for tag, n in zip(tags, positives, strict=True) if n == 0 or n == len(y_true)]
    if kept.size == 0:
        raise ValueError("no tag has both positive and negative examples in the evaluated split")
    y_true, y_score = y_true[:, kept], y_score[:, kept]
    kept_tags = [tags[i] for i in kept]

    result: dict = _scores(y_true, y_score, threshold)
    y_pred = (y_score >= threshold).astype(int)
    per_tag = zip(
        roc_auc_score(y_true, y_score, average=None),
        average_precision_score(y_true, y_score, average=None),
        f1_score(y_true, y_pred, average=None, zero_division=0),
        positives[kept],
        strict=True,
    )
    result["per_tag"] = {
        tag: {"roc_auc": float(auc), "map": float(ap), "f1": float(f1), "positives": int(n)}
        for tag, (auc, ap, f1, n) in zip(kept_tags, per_tag, strict=True)
    }
    columns: dict[str, list[int]] = defaultdict(list)
    for j, tag in enumerate(kept_tags):
        columns[tag_family(tag)].append(j)
    result["per_family"] = {
        family: {**_scores(y_true[:, js], y_score[:, js], threshold), "tags": len(js)}
        for family, js in columns.items()
    }
    result["excluded_tags"] = len(excluded)
    result["excluded"] = excluded
    return result


def summarize_seeds(runs: Sequence[dict]) -> dict:
    """Combine :func:`tagging_metrics` results of several seeds into a results-file task entry.

    Headline metrics become ``{"mean", "std"}`` (population std over seeds); per-tag and
    per-family values are seed means; ``excluded_tags`` is the largest count over seeds.
    """
    if not runs:
        raise ValueError("no runs to summarize")

    def mean_of(entries: list[dict]) -> dict:
        keys = set.intersection(*(set(e) for e in entries))
        return {k: float(np.mean([e[k] for e in entries])) for k in sorted(keys)}

    def nested_means(key: str) -> dict:
        names = set.intersection(*(set(run[key]) for run in runs))
        return {name: mean_of([run[key][name] for run in runs]) for name in sorted(names)}

    return {
        "metrics": {
            m: {
                "mean": float(np.mean([r[m] for r in runs])),
                "std": float(np.std([r[m] for r in runs])),
            }
            for m in HEADLINE
        },
        "per_tag": nested_means("per_tag"),
        "per_family": nested_means("per_family"),
        "excluded_tags": max(run["excluded_tags"] for run in runs),
    }


def macro_roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Macro ROC-AUC of ``scores [..., tracks, tags]`` against 0/1 ``labels`` of the same shape
    (or one that broadcasts to it, e.g. ``[tracks, tags]``), on the scores' device.

    Rank-based (Mann-Whitney U with average ranks for ties), batched over leading axes, in
    float64. Tags without both a positive and a negative track are left out of each mean (NaN
    where none is left). scikit-learn's ``roc_auc_score`` is the reference the tests hold it to.
    """
    scores = scores.double()
    labels = torch.as_tensor(labels).to(scores.device, torch.float64).expand_as(scores)
    n = scores.shape[-2]
    values, order = scores.transpose(-1, -2).sort(dim=-1)  # [..., tags, tracks]
    truth = labels.transpose(-1, -2).gather(-1, order)
    position = torch.arange(n, device=scores.device).expand_as(values)
    differs = values[..., 1:] != values[..., :-1]
    edge = torch.ones_like(differs[..., :1])
    run_start = torch.where(torch.cat([edge, differs], -1), position, 0).cummax(-1).values
    is_end = torch.cat([differs, edge], -1)
    run_end = torch.where(is_end, position, n - 1).flip(-1).cummin(-1).values.flip(-1)
    ranks = (run_start + run_end).double() / 2 + 1
    positives = truth.sum(-1)
    negatives = n - positives
    u = (ranks * truth).sum(-1) - positives * (positives + 1) / 2
    kept = (positives > 0) & (negatives > 0)
    auc = torch.where(kept, u / (positives * negatives).clamp(min=1), 0.0)
    return auc.sum(-1) / kept.sum(-1)


def macro_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Macro average precision (mAP) of ``scores [..., tracks, tags]`` against 0/1 ``labels``,
    batched over leading axes as :func:`macro_roc_auc` is, with the same tags left out.

    Precision at each positive in descending score order, averaged over the positives; tied
    scores count in sort order (scikit-learn's ``average_precision_score`` groups them, so the
    two agree exactly when no scores tie, as for continuous probabilities).
    """
    scores = scores.double()
    labels = torch.as_tensor(labels).to(scores.device, torch.float64).expand_as(scores)
    n = scores.shape[-2]
    order = scores.transpose(-1, -2).argsort(dim=-1, descending=True, stable=True)
    truth = labels.transpose(-1, -2).gather(-1, order)  # [..., tags, tracks], best first
    rank = torch.arange(1, n + 1, device=scores.device, dtype=torch.float64)
    positives = truth.sum(-1)
    kept = (positives > 0) & (positives < n)
    precision_sum = (truth.cumsum(-1) / rank * truth).sum(-1)
    ap = torch.where(kept, precision_sum / positives.clamp(min=1), 0.0)
    return ap.sum(-1) / kept.sum(-1)


def resampled_metric(
    metric, y_score: torch.Tensor, y_true: torch.Tensor, rows: torch.Tensor
) -> np.ndarray:
    """``metric`` (e.g. :func:`macro_roc_auc`) of every resample of tracks given as row indices
    ``rows [resamples, tracks]``, a few resamples at a time so memory stays bounded."""
    step = max(1, _BOOTSTRAP_ELEMENTS // y_score.numel())
    return torch.cat(
        [
            metric(y_score[rows[i : i + step]], y_true[rows[i : i + step]])
            for i in range(0, len(rows), step)
        ]
    ).numpy()


def bootstrap_roc_auc(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of macro ROC-AUC over resamples of the evaluated tracks.

    What a different draw of test tracks would have given: small cultural test sets make this
    much wider than the spread over probe seeds. Tags without both classes in a resample are
    left out of that resample's average, as in :func:`tagging_metrics`. Resamples are scored a
    few at a time, so memory stays bounded (tens of MB) whatever the split's size.
    """
    y_true, y_score = torch.as_tensor(np.asarray(y_true)), torch.as_tensor(np.asarray(y_score))
    tracks = len(y_true)
    rows = torch.from_numpy(np.random.default_rng(seed).integers(0, tracks, (resamples, tracks)))
    values = resampled_metric(macro_roc_auc, y_score, y_true, rows)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values[~np.isnan(values)], [tail, 100 - tail])
    return float(low), float(high)
