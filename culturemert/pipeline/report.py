"""The report step: the evaluation report of several encoders, plus what a pipeline adds to it —
each encoder's change from a baseline on every task, the λ sweep of a merge, and the limits of
the experiment — as one Markdown file and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from culturemert.evaluate.report import (
    TASK_TITLES,
    Section,
    figure_png,
    metric_value,
    row_labels,
    task_order,
    write_report,
)
from culturemert.evaluate.results import Results, load_results
from culturemert.pipeline.runner import StepContext


@dataclass
class ReportSettings:
    """Results files to compare, the merge whose λ sweep to show, and what to say around them."""

    results: list[str]
    title: str = "culturemert pipeline report"
    about: str = ""
    sweep: str | None = None  # a merge step's product: its folder holds sweep.csv and sweep.png
    baseline: str | None = None  # model the changes are measured from (default: the first)
    limits: list[str] = field(default_factory=list)  # what the experiment does not show


def change_matrix(
    runs: list[Results], baseline: Results, metric: str = "roc_auc"
) -> tuple[list[str], list[str], np.ndarray]:
    """Row labels, tasks and ``[models, tasks]`` differences from ``baseline`` in points (NaN
    where either lacks the value)."""
    tasks, labels = task_order(runs), row_labels(runs)
    change = np.full((len(runs), len(tasks)), np.nan)
    for j, task in enumerate(tasks):
        reference = metric_value(baseline, task, metric)
        for i, run in enumerate(runs):
            value = metric_value(run, task, metric)
            if value is not None and reference is not None:
                change[i, j] = value[0] - reference[0]
    return labels, tasks, change


def change_table(labels: list[str], tasks: list[str], change: np.ndarray) -> list[list[str]]:
    """Header and rows of signed differences, with the row mean."""
    rows = [["Model", *(TASK_TITLES.get(t, t) for t in tasks), "Avg."]]
    for label, values in zip(labels, change, strict=True):
        cells = ["–" if np.isnan(v) else f"{v:+.1f}" for v in values]
        mean = "–" if np.isnan(values).all() else f"{np.nanmean(values):+.1f}"
        rows.append([label, *cells, mean])
    return rows


def change_heatmap_png(labels: list[str], tasks: list[str], change: np.ndarray, title: str) -> str:
    """Base64 PNG of the differences on a diverging scale centred on zero."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.3 * len(tasks) + 3, 0.5 * len(labels) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    bound = float(np.nanmax(np.abs(change))) if np.isfinite(change).any() else 1.0
    image = axes.imshow(
        np.ma.masked_invalid(change), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto"
    )
    axes.set_xticks(range(len(tasks)), [TASK_TITLES.get(t, t) for t in tasks], rotation=30)
    axes.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(change):
        if np.isfinite(value):
            color = "white" if abs(value) > 0.6 * bound else "black"
            axes.text(j, i, f"{value:+.1f}", ha="center", va="center", color=color, fontsize=9)
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    return figure_png(figure)


def read_sweep(folder: Path) -> list[list[str]]:
    """The λ sweep table (header and rows) a merge wrote as ``sweep.csv``."""
    with open(folder / "sweep.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    return [["λ", header[1], "chosen"]] + [
        [f"{float(lam):g}", f"{100 * float(score):.1f}", "✓" if best == "1" else ""]
        for lam, score, best in body
    ]


def run_report(settings: ReportSettings, context: StepContext) -> Path:
    """Write ``report.md`` and ``report.html``; the product is the HTML page."""
    runs = [load_results(path) for path in settings.results]
    if not runs:
        raise ValueError("results: list at least one results file")
    labels = row_labels(runs)
    baseline_name = settings.baseline or runs[0]["model"]
    if baseline_name not in labels:
        raise ValueError(f"baseline {baseline_name!r} is none of the models ({', '.join(labels)})")
    baseline = runs[labels.index(baseline_name)]
    labels, tasks, change = change_matrix(runs, baseline)
    change_rows = change_table(labels, tasks, change)
    change_title = f"ROC-AUC change from {baseline_name} (points)"
    heatmap = change_heatmap_png(labels, tasks, change, change_title)
    extra = [Section(change_title, change_rows, images=(("change heatmap", heatmap),))]
    if settings.sweep:
        plot = base64.b64encode((Path(settings.sweep) / "sweep.png").read_bytes()).decode()
        extra.append(
            Section(
                "λ sweep of the merge (validation)",
                read_sweep(Path(settings.sweep)),
                images=(("λ sweep", plot),),
            )
        )
    if settings.limits:
        extra.append(Section("What this does not show", items=tuple(settings.limits)))
    _, page = write_report(
        runs, context.out, title=settings.title, intro=settings.about, extra=extra
    )
    return page
