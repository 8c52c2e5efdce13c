"""The report step: the evaluation report of several encoders, plus what a pipeline adds to it —
its claims with their intervals and verdicts, each encoder's change from a baseline on every
task, the λ sweep of a merge, and the limits of the experiment — as one Markdown file, one
self-contained HTML page and ``claims.json``.

Results of the same model from several replicas (one per pre-training seed) are pooled in the
tables: the mean over replicas ± their spread.
"""

from __future__ import annotations

import base64
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from culturemert.atomic import write_text
from culturemert.evaluate.claims import LEVEL, VERDICTS, ClaimSpec, judge
from culturemert.evaluate.report import (
    TASK_TITLES,
    Section,
    figure_png,
    metric_value,
    row_labels,
    task_order,
    write_report,
)
from culturemert.evaluate.results import Results, load_predictions, load_results
from culturemert.pipeline.curves import CurveSpec, build_curves, curves_json, curves_section
from culturemert.pipeline.runner import StepContext


@dataclass
class ReportSettings:
    """Results files to compare (several per model when replicated), the claims to judge on
    them, the merges whose λ sweeps to show, and what to say around them."""

    results: list[str]
    title: str = "culturemert pipeline report"
    about: str = ""
    claims: list[ClaimSpec] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)  # merge products: sweep.csv and sweep.png
    baseline: str | None = None  # model the changes are measured from (default: the first)
    limits: list[str] = field(default_factory=list)  # what the experiment does not show
    curves: list[CurveSpec] = field(default_factory=list)
    # Results only the curves read (snapshots part-way through training), kept out of the tables.
    curve_results: list[str] = field(default_factory=list)


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


def read_sweeps(folders: list[Path]) -> list[list[str]]:
    """The λ sweep tables (``sweep.csv``) of one or more merges side by side: a row per λ, a
    column per merge, ✓ by the λ each chose."""
    columns = []
    for folder in folders:
        with open(folder / "sweep.csv", newline="") as handle:
            header, *body = list(csv.reader(handle))
        columns.append({float(lam): (float(score), best == "1") for lam, score, best in body})
    names = (
        [header[1]] if len(folders) == 1 else [f"replica {i}" for i in range(1, len(folders) + 1)]
    )
    rows = [["λ", *names]]
    for lam in sorted(set().union(*columns)):
        cells = []
        for column in columns:
            score, best = column.get(lam, (float("nan"), False))
            cells.append(f"{100 * score:.1f}{' ✓' if best else ''}")
        rows.append([f"{lam:g}", *cells])
    return rows


def pool_replicas(runs: list[Results]) -> list[Results]:
    """One run per model: replicas of a model (same name) pooled as the mean over replicas ±
    their standard deviation; per-tag and per-family values averaged; selection from the first."""
    by_model: dict[str, list[Results]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    pooled = []
    for replicas in by_model.values():
        if len(replicas) == 1:
            pooled.append(replicas[0])
            continue
        run = {**replicas[0], "tasks": {}}
        for task, first in replicas[0]["tasks"].items():
            entries = [r["tasks"][task] for r in replicas]
            entry = {**first}
            entry["metrics"] = {
                metric: {
                    "mean": float(
                        np.mean(values := [e["metrics"][metric]["mean"] for e in entries])
                    ),
                    "std": float(np.std(values, ddof=1)),
                }
                for metric in first.get("metrics", {})
            }
            for key in ("per_tag", "per_family"):
                if key in first:
                    entry[key] = {
                        name: {
                            field_: float(np.mean([e[key][name][field_] for e in entries]))
                            for field_ in values
                        }
                        for name, values in first[key].items()
                    }
            if "roc_auc_interval" in first:
                entry["roc_auc_interval"] = np.mean(
                    [e["roc_auc_interval"] for e in entries], axis=0
                ).tolist()
            run["tasks"][task] = entry
        pooled.append(run)
    return pooled


def judge_claims(claims: list[ClaimSpec], results: list[str], runs: list[Results]) -> list[dict]:
    """Every claim judged on the test predictions saved beside each results file."""
    if not claims:
        return []
    predictions: dict[str, list] = {}
    for path, run in zip(results, runs, strict=True):
        predictions.setdefault(run["model"], []).append(
            load_predictions(Path(path).parent / "predictions.npz")
        )
    return [judge(claim, predictions) for claim in claims]


def claims_section(rows: list[dict]) -> Section:
    """The claims as a table, a forest plot of their intervals, and the rule behind the verdicts."""
    table = [["Claim", "A − B", "on", "Estimate", f"{LEVEL:.0%} interval", "Verdict"]]
    for row in rows:
        low, high = row["interval"]
        tasks = ", ".join(TASK_TITLES.get(t, t) for t in row["tasks"])
        metric = " & ".join(row["metrics"])
        table.append(
            [
                row["name"],
                f"{row['model']} − {row['reference']}",
                f"{metric} on {tasks}",
                f"{row['estimate']:+.1f}",
                f"[{low:+.1f}, {high:+.1f}]",
                row["verdict"],
            ]
        )
    replicas = max((row["replicas"] for row in rows), default=1)
    rule = (
        f"Each estimate is the paired difference of the two models in points, on the same test "
        f"tracks, averaged over {replicas} pre-training replica(s) paired by seed. The interval "
        "adds in quadrature a Student-t interval over the replicas and a bootstrap over resampled "
        "test tracks. A claim is supported when its whole interval lies above −margin (0, or the "
        "claim's margin), contradicted when it lies wholly below, inconclusive otherwise."
    )
    return Section(
        "Claims and verdicts",
        table,
        images=(("claims", forest_png(rows)),),
        items=(verdict_summary(rows), rule),
    )


def verdict_summary(rows: list[dict]) -> str:
    """One plain sentence: how many claims got each verdict, and which were decided."""
    counts = ", ".join(
        f"{sum(row['verdict'] == verdict for row in rows)} {verdict}" for verdict in VERDICTS
    )
    decided = [
        f"{row['name']} ({row['verdict']})" for row in rows if row["verdict"] != "inconclusive"
    ]
    named = f"; decided: {'; '.join(decided)}" if decided else "; none is decided"
    return f"Of {len(rows)} claims: {counts}{named}."


def forest_png(rows: list[dict]) -> str:
    """Base64 PNG: each claim's estimate and interval, coloured by verdict, with its threshold."""
    from matplotlib.figure import Figure

    colours = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}
    figure = Figure(figsize=(8, 0.45 * len(rows) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    for i, row in enumerate(rows):
        low, high = row["interval"]
        y = len(rows) - 1 - i
        axes.plot([low, high], [y, y], color=colours[row["verdict"]], linewidth=3)
        axes.plot(row["estimate"], y, "o", color="black")
        axes.plot([-row["margin"]] * 2, [y - 0.35, y + 0.35], color="black", linewidth=1)
    axes.axvline(0, color="black", linewidth=0.5, linestyle=":")
    axes.set_yticks(range(len(rows)), [row["name"] for row in reversed(rows)])
    axes.set_xlabel("paired difference A − B (points); | marks −margin")
    return figure_png(figure)


def run_report(settings: ReportSettings, context: StepContext) -> Path:
    """Write ``report.md`` and ``report.html``; the product is the HTML page."""
    replicas = [load_results(path) for path in settings.results]
    if not replicas:
        raise ValueError("results: list at least one results file")
    claims = judge_claims(settings.claims, settings.results, replicas)
    runs = pool_replicas(replicas)
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
    if settings.sweeps:
        folders = [Path(folder) for folder in settings.sweeps]
        plot = base64.b64encode((folders[0] / "sweep.png").read_bytes()).decode()
        extra.append(
            Section(
                "λ sweep of the merge (validation)",
                read_sweeps(folders),
                images=(("λ sweep", plot),),
            )
        )
    if settings.limits:
        extra.append(Section("What this does not show", items=tuple(settings.limits)))
    lead = []
    if claims:
        lead.append(claims_section(claims))
        write_text(
            context.out / "claims.json", json.dumps(claims, indent=1, ensure_ascii=False) + "\n"
        )
    if settings.curves:
        snapshots = [load_results(path) for path in settings.curve_results]
        curves = build_curves(settings.curves, replicas + snapshots)
        lead.append(curves_section(curves))
        write_text(context.out / "curves.json", json.dumps(curves_json(curves), indent=1) + "\n")
    _, page = write_report(
        runs, context.out, title=settings.title, intro=settings.about, lead=lead, extra=extra
    )
    return page
