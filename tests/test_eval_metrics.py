"""Tagging metrics against scikit-learn called directly, column by column."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from culturemert.evaluate.metrics import (
    bootstrap_roc_auc,
    summarize_seeds,
    tag_family,
    tagging_metrics,
)

TAGS = [
    "raga--yaman",
    "raga--bhairavi",
    "tala--teentaal",
    "tala--ektaal",
    "instrument--tabla",
    "instrument--sitar",
    "form--khayal",
    "plain",
]


def random_case(seed: int, n: int = 120):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, len(TAGS))) < 0.3).astype(np.float32)
    # Scores correlated with the labels, so that the metrics are far from chance.
    y_score = np.clip(0.35 * y_true + 0.65 * rng.random(y_true.shape), 0, 1)
    return y_true, y_score


def test_matches_scikit_learn_on_random_data():
    y_true, y_score = random_case(0)
    result = tagging_metrics(y_true, y_score, TAGS)
    y_pred = (y_score >= 0.5).astype(int)
    assert result["roc_auc"] == pytest.approx(
        np.mean([roc_auc_score(y_true[:, j], y_score[:, j]) for j in range(len(TAGS))])
    )
    assert result["map"] == pytest.approx(
        np.mean([average_precision_score(y_true[:, j], y_score[:, j]) for j in range(len(TAGS))])
    )
    tp = (y_pred * y_true).sum()
    micro = 2 * tp / (y_pred.sum() + y_true.sum())  # micro-F1 written out
    assert result["micro_f1"] == pytest.approx(micro)
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert result["excluded_tags"] == 0 and result["excluded"] == []
    for j, tag in enumerate(TAGS):
        entry = result["per_tag"][tag]
        assert entry["roc_auc"] == pytest.approx(roc_auc_score(y_true[:, j], y_score[:, j]))
        assert entry["map"] == pytest.approx(average_precision_score(y_true[:, j], y_score[:, j]))
        assert entry["f1"] == pytest.approx(f1_score(y_true[:, j], y_pred[:, j]))
        assert entry["positives"] == int(y_true[:, j].sum())


def test_per_family_averages_its_own_columns():
    y_true, y_score = random_case(1)
    result = tagging_metrics(y_true, y_score, TAGS, threshold=0.6)
    assert set(result["per_family"]) == {"raga", "tala", "instrument", "form", "tag"}
    tala = [2, 3]
    family = result["per_family"]["tala"]
    assert family["tags"] == 2
    assert family["roc_auc"] == pytest.approx(roc_auc_score(y_true[:, tala], y_score[:, tala]))
    assert family["map"] == pytest.approx(
        average_precision_score(y_true[:, tala], y_score[:, tala])
    )
    y_pred = (y_score[:, tala] >= 0.6).astype(int)
    assert family["micro_f1"] == pytest.approx(f1_score(y_true[:, tala], y_pred, average="micro"))
    assert family["macro_f1"] == pytest.approx(f1_score(y_true[:, tala], y_pred, average="macro"))


def test_tags_without_both_classes_are_left_out_and_counted():
    y_true, y_score = random_case(2)
    y_true[:, 1] = 0  # no positive in this split
    y_true[:, 4] = 1  # no negative
    result = tagging_metrics(y_true, y_score, TAGS)
    assert result["excluded_tags"] == 2
    assert result["excluded"] == ["raga--bhairavi", "instrument--tabla"]
    kept = [0, 2, 3, 5, 6, 7]
    with pytest.warns(UserWarning):  # scikit-learn's own macro average turns nan here
        assert np.isnan(roc_auc_score(y_true, y_score, average="macro"))
    assert result["roc_auc"] == pytest.approx(
        roc_auc_score(y_true[:, kept], y_score[:, kept], average="macro")
    )
    assert result["map"] == pytest.approx(
        average_precision_score(y_true[:, kept], y_score[:, kept], average="macro")
    )
    y_pred = (y_score[:, kept] >= 0.5).astype(int)
    assert result["macro_f1"] == pytest.approx(f1_score(y_true[:, kept], y_pred, average="macro"))
    assert result["micro_f1"] == pytest.approx(f1_score(y_true[:, kept], y_pred, average="micro"))
    assert "raga--bhairavi" not in result["per_tag"] and len(result["per_tag"]) == 6
    assert result["per_family"]["raga"]["tags"] == 1
    assert result["per_family"]["raga"]["roc_auc"] == pytest.approx(
        roc_auc_score(y_true[:, 0], y_score[:, 0])
    )


def test_bad_input_is_a_clear_error():
    y_true, y_score = random_case(3)
    with pytest.raises(ValueError, match=r"must both be \[n, 7\]"):
        tagging_metrics(y_true, y_score, TAGS[:-1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        tagging_metrics(y_true * 2, y_score, TAGS)
    with pytest.raises(ValueError, match="no tag has both"):
        tagging_metrics(np.zeros_like(y_true), y_score, TAGS)


def test_summarize_seeds_gives_mean_and_std():
    runs = [tagging_metrics(*random_case(seed), TAGS) for seed in (4, 5, 6)]
    summary = summarize_seeds(runs)
    values = [run["roc_auc"] for run in runs]
    assert summary["metrics"]["roc_auc"]["mean"] == pytest.approx(sum(values) / 3)
    mean = sum(values) / 3
    assert summary["metrics"]["roc_auc"]["std"] == pytest.approx(
        (sum((v - mean) ** 2 for v in values) / 3) ** 0.5
    )
    assert summary["per_tag"]["tala--ektaal"]["map"] == pytest.approx(
        sum(run["per_tag"]["tala--ektaal"]["map"] for run in runs) / 3
    )
    assert summary["excluded_tags"] == 0


def test_tag_family():
    assert tag_family("instruments--Voice") == "instruments"
    assert tag_family("makam--Hicaz--x") == "makam"
    assert tag_family("guitar") == "tag"


def test_bootstrap_interval_matches_resampling_with_scikit_learn():
    """Same resampled rows as the function draws; ties and rare tags included."""
    rng = np.random.default_rng(3)
    y_true = (rng.random((30, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.5]).astype(int)
    y_score = np.round(rng.random((30, 6)) + 0.5 * y_true, 1)  # rounding makes ties
    low, high = bootstrap_roc_auc(y_true, y_score, resamples=400, seed=7)
    values = []
    for rows in np.random.default_rng(7).integers(0, 30, (400, 30)):
        truth, score = y_true[rows], y_score[rows]
        kept = [j for j in range(6) if 0 < truth[:, j].sum() < 30]
        values.append(np.mean([roc_auc_score(truth[:, j], score[:, j]) for j in kept]))
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    kept = [j for j in range(6) if 0 < y_true[:, j].sum() < 30]
    assert low < np.mean([roc_auc_score(y_true[:, j], y_score[:, j]) for j in kept]) < high
