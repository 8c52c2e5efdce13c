"""Learning curves: probe scores against pre-training updates, per replica and their mean.

A curve lists models in the order training made them (e.g. the random init at 0 updates, a
snapshot part-way, the final encoder) with their update counts, and the tasks to average. Each
replica is drawn as a thin line (replica r of every point descends from the same seed) and
their mean as a thick one; an optional reference (hand-made features, say) is a band of its
mean ± spread. A sentence per curve says, from the numbers, how far it moved and where it ends
against the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from culturemert.evaluate.report import TASK_TITLES, Section, figure_png
from culturemert.evaluate.results import Results

METRIC_TITLES = {"roc_auc": "ROC-AUC", "map": "mAP"}


@dataclass
class CurvePoint:
    """One model on a curve and the pre-training updates behind it."""

    model: str
    updates: int


@dataclass
class CurveSpec:
    """Scores of ``points`` (mean over ``tasks`` of ``metric``), with ``reference`` as a band."""

    name: str
    tasks: list[str]
    points: list[CurvePoint]
    reference: str | None = None
    metric: str = "roc_auc"

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError(f"curve {self.name!r}: list at least two points")
        updates = [point.updates for point in self.points]
        if updates != sorted(updates) or len(set(updates)) != len(updates):
            raise ValueError(f"curve {self.name!r}: updates must increase, got {updates}")
        if not self.tasks:
            raise ValueError(f"curve {self.name!r}: list at least one task")


@dataclass
class Curve:
    """A curve's numbers in points: ``scores[point][replica]`` and the reference's scores."""

    spec: CurveSpec
    scores: list[list[float]]
    reference: list[float] = field(default_factory=list)


def model_scores(runs: Sequence[Results], model: str, tasks: list[str], metric: str) -> list[float]:
    """Each replica's mean test ``metric`` over ``tasks``, in points (replicas in run order)."""
    found = [run for run in runs if run["model"] == model]
    if not found:
        names = ", ".join(sorted({run["model"] for run in runs}))
        raise ValueError(f"curves: no results for model {model!r} (have: {names})")
    scores = []
    for run in found:
        missing = [
            task for task in tasks if metric not in run["tasks"].get(task, {}).get("metrics", {})
        ]
        if missing:
            raise ValueError(f"curves: {model!r} has no {metric} on {', '.join(missing)}")
        scores.append(
            100 * float(np.mean([run["tasks"][t]["metrics"][metric]["mean"] for t in tasks]))
        )
    return scores


def build_curves(specs: Sequence[CurveSpec], runs: Sequence[Results]) -> list[Curve]:
    """Every curve's scores, from the results of every replica of every model."""
    curves = []
    for spec in specs:
        scores = [model_scores(runs, p.model, spec.tasks, spec.metric) for p in spec.points]
        reference = []
        if spec.reference is not None:
            reference = model_scores(runs, spec.reference, spec.tasks, spec.metric)
        curves.append(Curve(spec, scores, reference))
    return curves


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def reading(curve: Curve) -> str:
    """One sentence, from the numbers: the change from the first point to the last (paired by
    replica where both have every replica) and where the last point ends against the reference."""
    first, last = curve.scores[0], curve.scores[-1]
    start, end = curve.spec.points[0], curve.spec.points[-1]
    paired = len(first) == len(last)
    change = np.subtract(last, first) if paired else [np.mean(last) - np.mean(first)]
    mean, sd = _mean_sd(change)
    spread = f" ± {sd:.1f} (sd over {len(change)} replicas)" if len(change) > 1 else ""
    text = (
        f"{curve.spec.name}: {np.mean(first):.1f} at {start.updates} updates, "
        f"{np.mean(last):.1f} at {end.updates}, a change of {mean:+.1f}{spread} points"
    )
    if curve.reference:
        gap = float(np.mean(last) - np.mean(curve.reference))
        side = "above" if gap > 0 else "below"
        text += f"; it ends {abs(gap):.1f} points {side} {curve.spec.reference}"
    return text + "."


def curves_table(curves: Sequence[Curve]) -> list[list[str]]:
    """A row per point: the curve, the model, its updates, mean ± sd and each replica's score."""
    rows = [["Curve", "Model", "Updates", "Mean ± sd (points)", "Replicas"]]
    for curve in curves:
        entries = list(zip(curve.spec.points, curve.scores, strict=True))
        if curve.reference:
            entries.append((CurvePoint(f"{curve.spec.reference} (reference)", -1), curve.reference))
        for point, scores in entries:
            mean, sd = _mean_sd(scores)
            rows.append(
                [
                    curve.spec.name,
                    point.model,
                    "–" if point.updates < 0 else str(point.updates),
                    f"{mean:.1f} ± {sd:.1f}",
                    ", ".join(f"{s:.1f}" for s in scores),
                ]
            )
    return rows


def curves_png(curves: Sequence[Curve]) -> str:
    """Base64 PNG: a panel per curve, replicas thin, their mean thick, the reference a band."""
    from matplotlib.figure import Figure

    columns = min(3, len(curves))
    rows = -(-len(curves) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.3 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in panels[len(curves) :]:
        axes.set_visible(False)
    for axes, curve in zip(panels, curves, strict=False):
        updates = [point.updates for point in curve.spec.points]
        replicas = max(len(scores) for scores in curve.scores)
        for r in range(replicas):
            line = [scores[r] if len(scores) > r else scores[0] for scores in curve.scores]
            axes.plot(updates, line, color="tab:blue", alpha=0.35, linewidth=1)
        means = [np.mean(scores) for scores in curve.scores]
        axes.plot(updates, means, "o-", color="tab:blue", linewidth=2.5, label="mean of replicas")
        if curve.reference:
            mean, sd = _mean_sd(curve.reference)
            axes.axhspan(mean - sd, mean + sd, color="tab:orange", alpha=0.25)
            axes.axhline(mean, color="tab:orange", linestyle="--", label=curve.spec.reference)
        tasks = curve.spec.tasks
        on = (
            TASK_TITLES.get(tasks[0], tasks[0])
            if len(tasks) == 1
            else f"mean of {len(tasks)} tasks"
        )
        axes.set_title(f"{curve.spec.name}\n({on})", fontsize=9)
        axes.set_xlabel("updates since the first point")
        axes.set_ylabel(f"test {METRIC_TITLES.get(curve.spec.metric, curve.spec.metric)} (points)")
        axes.legend(fontsize=7, loc="best")
    return figure_png(figure)


def curves_json(curves: Sequence[Curve]) -> list[dict]:
    """The curves as data: each point's model, updates and per-replica scores (points)."""
    return [
        {
            "name": curve.spec.name,
            "tasks": curve.spec.tasks,
            "metric": curve.spec.metric,
            "points": [
                {"model": point.model, "updates": point.updates, "scores": scores}
                for point, scores in zip(curve.spec.points, curve.scores, strict=True)
            ],
            "reference": curve.spec.reference,
            "reference_scores": curve.reference,
            "reading": reading(curve),
        }
        for curve in curves
    ]


def curves_section(curves: Sequence[Curve]) -> Section:
    """The learning curves as a figure, a table and one plain sentence each."""
    return Section(
        "Learning curves: probe score against pre-training updates",
        curves_table(curves),
        images=(("learning curves", curves_png(curves)),),
        items=tuple(reading(curve) for curve in curves),
    )
