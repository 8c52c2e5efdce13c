"""Benchmark: the test-track bootstrap of macro ROC-AUC, time and peak memory, on MTAT's shape.

``culturemert.evaluate.metrics.bootstrap_roc_auc`` (resamples ranked a few at a time) against
the direct way, every resample at once: ``scipy.stats.rankdata`` over a
``[resamples, tracks, tags]`` array. Peak memory is the growth of this process's maximum
resident size, measured ours first (the baseline's larger peak comes after it).

    python bench/bootstrap.py [--tracks 4332] [--tags 50] [--no-baseline]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from culturemert.evaluate.metrics import bootstrap_roc_auc  # noqa: E402


def all_at_once(y_true: np.ndarray, y_score: np.ndarray, resamples: int = 1000, seed: int = 0):
    """The same percentile interval with every resample in memory at once."""
    rows = np.random.default_rng(seed).integers(0, len(y_true), (resamples, len(y_true)))
    labels = y_true[rows].astype(bool)
    ranks = rankdata(y_score[rows], axis=1)
    positives = labels.sum(axis=1)
    negatives = len(y_true) - positives
    u = (ranks * labels).sum(axis=1) - positives * (positives + 1) / 2
    scorable = (positives > 0) & (negatives > 0)
    auc = np.where(scorable, u / np.maximum(positives * negatives, 1), 0.0)
    counts = scorable.sum(axis=1)
    values = auc.sum(axis=1)[counts > 0] / counts[counts > 0]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def peak_mb() -> float:
    """This process's maximum resident size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, *args) -> tuple[tuple[float, float], float, float]:
    """Result, seconds and peak-memory growth of one call."""
    before, start = peak_mb(), time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start, peak_mb() - before


def main() -> None:
    """Measure both ways and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=4332, help="MTAT's test split")
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--no-baseline", action="store_true", help="skip the all-at-once way")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = (rng.random((args.tracks, args.tags)) < 0.1).astype(np.float32)
    scores = rng.random((args.tracks, args.tags)) + 0.3 * labels
    print(machine_line())
    print(f"{args.tracks} tracks × {args.tags} tags, 1,000 resamples")
    ours, seconds, grown = timed(bootstrap_roc_auc, labels, scores)
    print(f"culturemert bootstrap_roc_auc: {seconds:6.1f} s, peak memory +{grown:8.0f} MB  {ours}")
    if args.no_baseline:
        return
    theirs, base_seconds, base_grown = timed(all_at_once, labels, scores)
    print(
        f"all resamples at once:         {base_seconds:6.1f} s, peak memory +{base_grown:8.0f} MB"
        f"  {theirs}"
    )
    print(
        f"ratios: {base_seconds / seconds:.2f}× faster, {base_grown / max(grown, 1):.0f}× less "
        f"memory; intervals equal: {np.allclose(ours, theirs, rtol=0, atol=1e-12)}"
    )


if __name__ == "__main__":
    main()
