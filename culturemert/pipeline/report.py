"""The report step: the evaluation report of several encoders, plus what a pipeline adds to it —
each encoder's change from a baseline on every task, the λ sweep of a merge, and the limits of
the experiment — as one Markdown file and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from culturemert.atomic import write_text
from culturemert.evaluate.report import (
    TASK_TITLES,
    figure_png,
    html_image,
    html_report,
    html_table,
    markdown_report,
    markdown_table,
    metric_value,
    row_labels,
    task_order,
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
    sweep = read_sweep(Path(settings.sweep)) if settings.sweep else None

    markdown = [f"# {settings.title}", settings.about, markdown_report(runs)]
    markdown += [f"### {change_title}", markdown_table(change_rows)]
    if sweep:
        markdown += ["### λ sweep of the merge (validation)", markdown_table(sweep)]
    if settings.limits:
        markdown += [
            "### What this does not show",
            "\n".join(f"- {line}" for line in settings.limits),
        ]
    write_text(context.out / "report.md", "\n\n".join(part for part in markdown if part) + "\n")

    # The evaluation page carries the paper's tables and the transfer heatmaps; the pipeline's
    # sections go before its closing tag, under the pipeline's own title.
    added = [f"<h2>{html.escape(change_title)}</h2>", html_table(change_rows)]
    added.append(
        html_image(change_heatmap_png(labels, tasks, change, change_title), "change heatmap")
    )
    if sweep:
        added += ["<h2>λ sweep of the merge (validation)</h2>", html_table(sweep)]
        added.append(
            html_image(
                base64.b64encode((Path(settings.sweep) / "sweep.png").read_bytes()).decode(),
                "λ sweep",
            )
        )
    if settings.limits:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in settings.limits)
        added += ["<h2>What this does not show</h2>", f"<ul>{items}</ul>"]
    page = html_report(runs).replace(
        "<h1>culturemert evaluation report</h1>",
        f"<h1>{html.escape(settings.title)}</h1><p>{html.escape(settings.about)}</p>",
    )
    page = page.replace("</body>", "".join(added) + "</body>")
    return write_text(context.out / "report.html", page)
