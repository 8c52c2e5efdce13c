"""Learning curves and the claims summary: scores, readings and report sections from constructed results."""

from __future__ import annotations

import numpy as np
import pytest

from culturemert.pipeline.curves import (
    CurvePoint,
    CurveSpec,
    build_curves,
    curves_json,
    curves_section,
    reading,
)


def results(model: str, roc_auc: dict[str, float]) -> dict:
    """A results file's shape with only what curves read."""
    tasks = {t: {"metrics": {"roc_auc": {"mean": v, "std": 0.0}}} for t, v in roc_auc.items()}
    return {"model": model, "tasks": tasks}


RUNS = [
    # three replicas of each trained model, one run of the hand-made reference
    *(results("init", {"a": 0.50 + d, "b": 0.60 + d}) for d in (0.00, 0.02, 0.04)),
    *(results("half", {"a": 0.60 + d, "b": 0.70 + d}) for d in (0.00, 0.01, 0.05)),
    *(results("final", {"a": 0.70 + d, "b": 0.72 + d}) for d in (0.01, 0.02, 0.03)),
    results("hand-made", {"a": 0.80, "b": 0.80}),
]
SPEC = CurveSpec(
    name="base",
    tasks=["a", "b"],
    points=[CurvePoint("init", 0), CurvePoint("half", 10), CurvePoint("final", 30)],
    reference="hand-made",
)


def test_scores_are_task_means_in_points_per_replica():
    [curve] = build_curves([SPEC], RUNS)
    np.testing.assert_allclose(curve.scores[0], [55.0, 57.0, 59.0])
    np.testing.assert_allclose(curve.scores[1], [65.0, 66.0, 70.0])
    np.testing.assert_allclose(curve.scores[2], [72.0, 73.0, 74.0])
    np.testing.assert_allclose(curve.reference, [80.0])


def test_the_reading_states_the_paired_change_and_the_gap_to_the_reference():
    [curve] = build_curves([SPEC], RUNS)
    # paired changes 72-55, 73-57, 74-59 = 17, 16, 15: mean 16, sd 1; ends 73 vs 80.
    assert reading(curve) == (
        "base: 57.0 at 0 updates, 73.0 at 30, a change of +16.0 ± 1.0 (sd over 3 replicas) "
        "points; it ends 7.0 points below hand-made."
    )


def test_section_and_json_hold_every_point():
    [curve] = build_curves([SPEC], RUNS)
    section = curves_section([curve])
    assert [row[1:3] for row in section.table[1:]] == [
        ["init", "0"],
        ["half", "10"],
        ["final", "30"],
        ["hand-made (reference)", "–"],
    ]
    assert section.table[3][3] == "73.0 ± 1.0" and section.images
    [data] = curves_json([curve])
    assert [p["updates"] for p in data["points"]] == [0, 10, 30]
    assert data["reference_scores"] == pytest.approx([80.0])


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="updates must increase"):
        CurveSpec("x", ["a"], [CurvePoint("init", 5), CurvePoint("final", 5)])
    with pytest.raises(ValueError, match="at least two points"):
        CurveSpec("x", ["a"], [CurvePoint("init", 0)])
    missing = CurveSpec("x", ["a"], [CurvePoint("init", 0), CurvePoint("nobody", 3)])
    with pytest.raises(ValueError, match="no results for model 'nobody'"):
        build_curves([missing], RUNS)
    other_task = CurveSpec("x", ["c"], [CurvePoint("init", 0), CurvePoint("final", 3)])
    with pytest.raises(ValueError, match="'init' has no roc_auc on c"):
        build_curves([other_task], RUNS)


def test_the_claims_summary_counts_every_verdict():
    from culturemert.pipeline.report import verdict_summary

    rows = [
        {"name": "a", "verdict": "supported"},
        {"name": "b", "verdict": "inconclusive"},
        {"name": "c", "verdict": "contradicted"},
        {"name": "d", "verdict": "inconclusive"},
    ]
    assert verdict_summary(rows) == (
        "Of 4 claims: 1 supported, 1 contradicted, 2 inconclusive; "
        "decided: a (supported); c (contradicted)."
    )
    assert verdict_summary(rows[1:2]).endswith("; none is decided.")
