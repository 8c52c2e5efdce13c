"""Claims: paired differences of two models with intervals over seeds and test tracks, and the
verdict rule, held to scikit-learn's metrics and SciPy's t quantiles written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from culturemert.evaluate.claims import ClaimSpec, judge, paired_difference, verdict
from culturemert.evaluate.metrics import macro_average_precision
from culturemert.evaluate.results import (
    Predictions,
    ResultsError,
    load_predictions,
    save_predictions,
)

TRACKS, TAGS = 120, 6


def labels_for(seed: int = 0) -> np.ndarray:
    labels = np.random.default_rng(seed).random((TRACKS, TAGS)) < 0.3
    labels[0], labels[1] = True, False  # every tag has both classes
    return labels.astype(np.uint8)


def noisy_scores(labels: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Scores that rank positives above negatives more often as ``signal`` grows."""
    noise = np.random.default_rng(seed).normal(size=labels.shape)
    return (1 / (1 + np.exp(-(signal * labels + noise)))).astype(np.float32)


def run(labels: np.ndarray, scores: np.ndarray, task: str = "t") -> dict[str, Predictions]:
    ids = [f"track-{i}" for i in range(len(labels))]
    vocabulary = [f"tag--{j}" for j in range(labels.shape[1])]
    return {task: Predictions(ids, labels, scores, vocabulary)}


def replicas(labels: np.ndarray, signals: list[float], seed: int) -> list[dict]:
    return [run(labels, noisy_scores(labels, s, seed + 100 * i)) for i, s in enumerate(signals)]


def sklearn_auc(predictions: dict[str, Predictions]) -> float:
    entry = predictions["t"]
    return roc_auc_score(entry.labels, entry.scores, average="macro")


def test_verdict_rule_on_its_boundaries():
    assert verdict(0.001, 0.05) == "supported"
    assert verdict(-0.05, -0.001) == "contradicted"
    assert verdict(-0.01, 0.02) == "inconclusive"
    # With a margin the threshold moves to −margin: "at most 2 points worse".
    assert verdict(-0.015, 0.01, margin=0.02) == "supported"
    assert verdict(-0.06, -0.03, margin=0.02) == "contradicted"
    assert verdict(-0.03, 0.0, margin=0.02) == "inconclusive"


def test_a_clear_effect_is_supported_and_its_reverse_contradicted():
    labels = labels_for()
    strong = replicas(labels, [2.0, 2.1, 1.9], seed=1)
    weak = replicas(labels, [0.3, 0.3, 0.3], seed=2)
    claim = ClaimSpec("strong beats weak", "strong", "weak", ["t"])
    row = judge(claim, {"strong": strong, "weak": weak})
    assert row["verdict"] == "supported" and row["estimate"] > 10
    reverse = judge(
        ClaimSpec("weak beats strong", "weak", "strong", ["t"]), {"strong": strong, "weak": weak}
    )
    assert reverse["verdict"] == "contradicted"
    assert reverse["estimate"] == pytest.approx(-row["estimate"], abs=0.01)


def test_a_null_effect_is_inconclusive():
    labels = labels_for()
    a = replicas(labels, [1.0, 1.0, 1.0], seed=3)
    b = replicas(labels, [1.0, 1.0, 1.0], seed=4)  # same signal, other noise
    estimate = paired_difference(a, b, ["t"])
    assert estimate.low < 0 < estimate.high
    assert verdict(estimate.low, estimate.high) == "inconclusive"


def test_an_effect_inside_the_seed_noise_is_inconclusive():
    """A mean gain of about one point whose replicas disagree in sign: the t part covers 0."""
    labels = labels_for()
    b = replicas(labels, [1.0, 1.0, 1.0], seed=5)
    a = replicas(labels, [2.0, 0.4, 1.2], seed=5)  # the same noise as b, so pairing is tight
    estimate = paired_difference(a, b, ["t"])
    assert min(estimate.per_replica) < 0 < max(estimate.per_replica)
    assert verdict(estimate.low, estimate.high) == "inconclusive"


def test_estimate_and_seed_part_follow_sklearn_and_the_t_interval():
    labels = labels_for(7)
    a = replicas(labels, [1.5, 1.2, 1.8, 1.0], seed=8)
    b = replicas(labels, [1.0, 1.0, 1.0, 1.0], seed=9)
    estimate = paired_difference(a, b, ["t"], resamples=200)
    differences = np.array([sklearn_auc(x) - sklearn_auc(y) for x, y in zip(a, b, strict=True)])
    assert estimate.per_replica == pytest.approx(differences, abs=1e-9)
    assert estimate.difference == pytest.approx(differences.mean(), abs=1e-9)
    t = stats.t.ppf(0.975, df=3)
    assert estimate.seed_half_width == pytest.approx(
        t * differences.std(ddof=1) / np.sqrt(4), rel=1e-9
    )
    half = estimate.high - estimate.difference
    assert half == pytest.approx(np.hypot(estimate.seed_half_width, estimate.track_half_width))
    assert estimate.track_half_width > 0


def test_track_part_shrinks_with_more_test_tracks():
    def width(tracks: int) -> float:
        rng = np.random.default_rng(tracks)
        labels = (rng.random((tracks, TAGS)) < 0.3).astype(np.uint8)
        labels[0], labels[1] = 1, 0
        a = [run(labels, noisy_scores(labels, 1.5, 1))]
        b = [run(labels, noisy_scores(labels, 1.0, 2))]
        return paired_difference(a, b, ["t"], resamples=300).track_half_width

    assert width(800) < 0.6 * width(100)  # ~1/sqrt(n): 0.35 expected


def test_a_single_run_pairs_with_every_replica_and_unequal_counts_are_refused():
    labels = labels_for()
    handmade = replicas(labels, [1.0], seed=10)
    encoder = replicas(labels, [1.4, 1.5, 1.6], seed=11)
    estimate = paired_difference(encoder, handmade, ["t"])
    expected = [sklearn_auc(e) - sklearn_auc(handmade[0]) for e in encoder]
    assert estimate.per_replica == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="cannot pair 3 runs with 2"):
        paired_difference(encoder, encoder[:2], ["t"])


def test_models_scored_on_other_tracks_are_refused():
    labels = labels_for()
    a = replicas(labels, [1.0], seed=12)
    other = run(labels[::-1].copy(), a[0]["t"].scores)
    other["t"] = other["t"]._replace(track_ids=[f"x{i}" for i in range(TRACKS)])
    with pytest.raises(ValueError, match="same test tracks"):
        paired_difference(a, [other], ["t"])


def test_claims_name_their_models_and_metrics():
    with pytest.raises(ValueError, match="metrics must be some of"):
        ClaimSpec("c", "a", "b", ["t"], metrics=["accuracy"])
    with pytest.raises(ValueError, match="margin"):
        ClaimSpec("c", "a", "b", ["t"], margin=-0.1)
    labels = labels_for()
    with pytest.raises(ValueError, match="no model 'b'"):
        judge(ClaimSpec("c", "a", "b", ["t"]), {"a": replicas(labels, [1.0], seed=0)})


def test_macro_average_precision_equals_sklearn_batched():
    labels = labels_for(13)
    scores = np.stack([noisy_scores(labels, s, 14 + i) for i, s in enumerate([0.5, 1.0, 2.0])])
    ours = macro_average_precision(torch.from_numpy(scores), torch.from_numpy(labels))
    expected = [average_precision_score(labels, s, average="macro") for s in scores]
    assert ours.numpy() == pytest.approx(expected, abs=1e-12)


def test_predictions_round_trip_and_bad_files_are_named(tmp_path):
    labels = labels_for()
    written = run(labels, noisy_scores(labels, 1.0, 0), task="synth-makam")
    path = save_predictions(tmp_path / "predictions.npz", written)
    read = load_predictions(path)["synth-makam"]
    assert read.track_ids == list(written["synth-makam"].track_ids)
    assert np.array_equal(read.labels, labels)
    assert np.array_equal(read.scores, written["synth-makam"].scores)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ResultsError, match="broken.npz: not a readable predictions file"):
        load_predictions(broken)
