"""Side-by-side reports of evaluation runs: Markdown tables and a self-contained HTML page.

The tables follow the CultureMERT paper: one with ROC-AUC / mAP and one with micro-F1 /
macro-F1, models as rows, datasets as columns, and an average over every cell of the row. The
HTML page adds a models x datasets heatmap (the cross-cultural transfer matrix) and per-family
bar charts, embedded as PNG so the page is one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from culturemert.atomic import write_text
from culturemert.evaluate.results import Results, validate_results

#: Paper column order and titles; other tasks follow in alphabetical order.
TASK_TITLES = {
    "makam": "Turkish-makam",
    "hindustani": "Hindustani",
    "carnatic": "Carnatic",
    "lyra": "Lyra",
    "fma": "FMA-medium",
    "mtat": "MTAT",
}
METRIC_TITLES = {"roc_auc": "ROC-AUC", "map": "mAP", "micro_f1": "Micro-F1", "macro_f1": "Macro-F1"}
TABLES = (("roc_auc", "map"), ("micro_f1", "macro_f1"))
MISSING = "–"
TABLES_FILE = "report-tables.json"


def load_paper_results() -> list[Results]:
    """The published numbers of MERT-v1-95M, CultureMERT-95M and CultureMERT-TA-95M."""
    text = resources.files("culturemert.evaluate").joinpath("paper_results.json").read_text()
    document = json.loads(text)
    runs = [validate_results(run, "paper_results.json") for run in document["results"]]
    return [{**run, "source": document["source"]} for run in runs]


def task_order(runs: Sequence[Results]) -> list[str]:
    """Every task of the runs: the paper's datasets first, in its order, then the rest."""
    present = {task for run in runs for task in run["tasks"]}
    return [t for t in TASK_TITLES if t in present] + sorted(present - set(TASK_TITLES))


def row_labels(runs: Sequence[Results]) -> list[str]:
    """Model names, numbered when the same model appears in several runs."""
    labels = []
    for run in runs:
        label, copy = run["model"], 2
        while label in labels:
            label, copy = f"{run['model']} ({copy})", copy + 1
        labels.append(label)
    return labels


def metric_value(run: Results, task: str, metric: str) -> tuple[float, float | None] | None:
    """``(mean, std)`` in percent, or None when the run lacks it."""
    summary = run["tasks"].get(task, {}).get("metrics", {}).get(metric)
    if summary is None:
        return None
    std = summary.get("std")
    return 100 * summary["mean"], None if std is None else 100 * std


def _number(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return MISSING
    mean, std = value
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def _cell(values: list[tuple[float, float | None] | None]) -> str:
    if all(v is None for v in values):
        return MISSING
    return " / ".join(_number(v) for v in values)


def row_average(run: Results, tasks: Sequence[str], metrics: Sequence[str]) -> float | None:
    """Mean of every (task, metric) cell in percent; None unless all cells are present."""
    values = [metric_value(run, task, m) for task in tasks for m in metrics]
    if not values or any(v is None for v in values):
        return None
    return float(np.mean([v[0] for v in values]))


def table_rows(
    runs: Sequence[Results], tasks: Sequence[str], metrics: Sequence[str]
) -> list[list[str]]:
    """Header and one row per run: model, ``a / b`` per task, average."""
    header = ["Model", *(TASK_TITLES.get(t, t) for t in tasks), "Avg."]
    rows = [header]
    for label, run in zip(row_labels(runs), runs, strict=True):
        cells = [_cell([metric_value(run, t, m) for m in metrics]) for t in tasks]
        average = row_average(run, tasks, metrics)
        rows.append([label, *cells, MISSING if average is None else f"{average:.1f}"])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    """A Markdown table from a header row and body rows."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _count_note(runs: Sequence[Results], field: str, what: str) -> str | None:
    """One line of per-task counts of ``field``, naming models only where they differ."""
    labels = row_labels(runs)
    by_task: dict[str, dict[int, list[str]]] = {}
    evaluated: dict[str, int] = {}
    for label, run in zip(labels, runs, strict=True):
        for task, entry in run["tasks"].items():
            evaluated[task] = evaluated.get(task, 0) + 1
            if entry.get(field):
                by_task.setdefault(task, {}).setdefault(entry[field], []).append(label)
    parts = [
        f"{TASK_TITLES.get(task, task)} {count}"
        + ("" if len(models) == evaluated[task] else f" ({', '.join(models)})")
        for task, counts in by_task.items()
        for count, models in counts.items()
    ]
    return f"{what}: {'; '.join(parts)}." if parts else None


def _interval_note(runs: Sequence[Results]) -> str | None:
    """The widest 95% bootstrap interval of test ROC-AUC per task, as ± points."""
    widest: dict[str, float] = {}
    for run in runs:
        for task, entry in run["tasks"].items():
            if entry.get("roc_auc_interval"):
                low, high = entry["roc_auc_interval"]
                widest[task] = max(widest.get(task, 0.0), 50 * (high - low))
    if not widest:
        return None
    parts = [f"{TASK_TITLES.get(task, task)} ±{width:.1f}" for task, width in widest.items()]
    return (
        "Test-split noise: the 95% bootstrap interval of ROC-AUC over resampled test tracks "
        f"spans up to {'; '.join(parts)} points (widest over models); smaller differences "
        "between models could come from the draw of test tracks alone."
    )


def _notes(runs: Sequence[Results]) -> list[str]:
    notes = [
        _interval_note(runs),
        _count_note(
            runs,
            "excluded_tags",
            "Tags left out of the averages for want of a positive or a negative test example",
        ),
        _count_note(runs, "missing_audio", "Listed tracks without an audio file, not evaluated"),
    ]
    sources = {run["source"] for run in runs if run.get("source")}
    notes += [f"Published numbers: {source}" for source in sorted(sources)]
    return [note for note in notes if note]


def _selection_rows(runs: Sequence[Results], tasks: Sequence[str]) -> list[list[str]] | None:
    if not any(entry.get("selected") for run in runs for entry in run["tasks"].values()):
        return None
    rows = [["Model", *(TASK_TITLES.get(t, t) for t in tasks)]]
    for label, run in zip(row_labels(runs), runs, strict=True):
        if not any(entry.get("selected") for entry in run["tasks"].values()):
            continue
        cells = []
        for task in tasks:
            chosen = run["tasks"].get(task, {}).get("selected")
            cells.append(
                f"layer {chosen.get('layer')}, {chosen.get('probe')}, lr {chosen.get('lr')}"
                if chosen
                else MISSING
            )
        rows.append([label, *cells])
    return rows


@dataclass
class ReportOptions:
    """What ``culturemert report`` adds around the tables: the paper's rows, a title, an intro."""

    paper: bool = False
    title: str | None = None
    intro: str = ""


@dataclass(frozen=True)
class Section:
    """One titled part of a report: a table, pictures (HTML only) and bullet points."""

    title: str | None
    table: list[list[str]] | None = None
    images: tuple[tuple[str, str], ...] = ()  # (alt text, base64 PNG)
    items: tuple[str, ...] = ()


def report_sections(runs: Sequence[Results], *, images: bool = True) -> list[Section]:
    """The paper-shaped tables (values in %), the selected probes, the transfer matrix and the
    per-family bars (when ``images``), and the notes."""
    tasks = task_order(runs)
    sections = [
        Section(
            f"{' / '.join(METRIC_TITLES[m] for m in metrics)} (%)",
            table_rows(runs, tasks, metrics),
        )
        for metrics in TABLES
    ]
    selection = _selection_rows(runs, tasks)
    if selection:
        sections.append(Section("Selected on validation", selection))
    if images:
        heatmaps = tuple(
            (f"{metric} heatmap", heatmap_png(runs, metric)) for metric in ("roc_auc", "map")
        )
        sections.append(Section("Cross-cultural transfer matrix", images=heatmaps))
        bars = tuple(
            (f"{task} per family", png)
            for task in tasks
            if (png := family_bars_png(runs, task)) is not None
        )
        if bars:
            sections.append(Section("Per tag family", images=bars))
    notes = _notes(runs)
    if notes:
        sections.append(Section(None, items=tuple(notes)))
    return sections


def render_markdown(sections: Sequence[Section], title: str | None = None, intro: str = "") -> str:
    """Sections as Markdown (pictures left out), under an optional title and intro."""
    parts = [f"# {title}"] if title else []
    if intro:
        parts.append(intro)
    for section in sections:
        if section.title:
            parts.append(f"### {section.title}")
        if section.table:
            parts.append(markdown_table(section.table))
        if section.items:
            parts.append("\n".join(f"- {item}" for item in section.items))
    return "\n\n".join(parts) + "\n"


def render_html(
    sections: Sequence[Section], title: str = "culturemert evaluation report", intro: str = ""
) -> str:
    """Sections as one self-contained HTML page."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(f"<p>{html.escape(intro)}</p>")
    for section in sections:
        if section.title:
            body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.table:
            body.append(html_table(section.table))
        body += [html_image(data, alt) for alt, data in section.images]
        if section.items:
            body.append(
                "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in section.items) + "</ul>"
            )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:75em}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{display:block;margin:1em 0}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def markdown_report(runs: Sequence[Results]) -> str:
    """The evaluation report of ``runs`` as Markdown."""
    return render_markdown(report_sections(runs, images=False))


def card_section(runs: Sequence[Results]) -> tuple[str, str]:
    """A model card's "Evaluation" section: the paper's two tables for ``runs``, and notes."""
    intro = (
        "Probing with `culturemert evaluate` (frozen encoder, probe selected on validation; "
        "test-split values in %, mean ± std over seeds), in the CultureMERT paper's tables."
    )
    return "Evaluation", f"{intro}\n\n{markdown_report(runs).strip()}"


def figure_png(figure) -> str:
    """A matplotlib figure as base64 PNG data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def heatmap_png(runs: Sequence[Results], metric: str) -> str:
    """Base64 PNG of a models x datasets heatmap of ``metric`` (%), blank where missing."""
    from matplotlib.figure import Figure

    tasks, labels = task_order(runs), row_labels(runs)
    grid = np.full((len(runs), len(tasks)), np.nan)
    for i, run in enumerate(runs):
        for j, task in enumerate(tasks):
            value = metric_value(run, task, metric)
            if value is not None:
                grid[i, j] = value[0]
    figure = Figure(figsize=(1.3 * len(tasks) + 3, 0.5 * len(runs) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(tasks)), [TASK_TITLES.get(t, t) for t in tasks], rotation=30)
    axes.set_yticks(range(len(runs)), labels)
    middle = np.nanmean(grid) if np.isfinite(grid).any() else 0.0
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            color = "black" if value > middle else "white"
            axes.text(j, i, f"{value:.1f}", ha="center", va="center", color=color, fontsize=9)
    axes.set_title(f"{METRIC_TITLES[metric]} (%): models x datasets")
    figure.colorbar(image, ax=axes)
    return figure_png(figure)


def family_bars_png(runs: Sequence[Results], task: str) -> str | None:
    """Base64 PNG of per-family ROC-AUC and mAP bars for ``task``; None without family data."""
    from matplotlib.figure import Figure

    having = [
        (label, run)
        for label, run in zip(row_labels(runs), runs, strict=True)
        if run["tasks"].get(task, {}).get("per_family")
    ]
    if not having:
        return None
    families = sorted({f for _, run in having for f in run["tasks"][task]["per_family"]})
    figure = Figure(figsize=(max(8.0, 2.4 * len(families) + 2), 3.6), layout="constrained")
    width = 0.8 / len(having)
    for k, metric in enumerate(("roc_auc", "map")):
        axes = figure.add_subplot(1, 2, k + 1)
        # ROC-AUC bars grow up or down from chance (50), so scores below it stay visible.
        chance = 50.0 if metric == "roc_auc" else 0.0
        lowest = chance
        for i, (label, run) in enumerate(having):
            per_family = run["tasks"][task]["per_family"]
            values = np.array([100 * per_family.get(f, {}).get(metric, np.nan) for f in families])
            lowest = min(lowest, np.nanmin(values, initial=chance))
            x = np.arange(len(families)) + i * width
            axes.bar(x, values - chance, width, bottom=chance, label=label)
        axes.set_xticks(np.arange(len(families)) + width * (len(having) - 1) / 2, families)
        axes.set_title(f"{METRIC_TITLES[metric]} (%)")
        axes.set_ylim(10 * np.floor(lowest / 10), 100)
        if chance:
            axes.axhline(chance, color="0.4", linewidth=0.8, linestyle="--")
    figure.suptitle(f"{TASK_TITLES.get(task, task)}: per tag family")
    figure.legend(*axes.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    return figure_png(figure)


def html_table(rows: list[list[str]]) -> str:
    """An HTML table (escaped) from a header row and body rows."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_image(data: str, alt: str) -> str:
    """An inline ``<img>`` for base64 PNG data."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_report(
    runs: Sequence[Results],
    out_dir: str | Path,
    *,
    title: str | None = None,
    intro: str = "",
    lead: Sequence[Section] = (),
    extra: Sequence[Section] = (),
) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report-tables.json`` (every table by its
    section title) into ``out_dir``; ``lead`` sections come before the evaluation's, ``extra``
    ones after. Returns the Markdown and HTML paths."""
    if not runs:
        raise ValueError("nothing to report: give at least one results file or the paper numbers")
    out_dir = Path(out_dir)
    sections = [*lead, *report_sections(runs), *extra]
    markdown = write_text(out_dir / "report.md", render_markdown(sections, title, intro))
    page = write_text(
        out_dir / "report.html",
        render_html(sections, title or "culturemert evaluation report", intro),
    )
    tables = {section.title: section.table for section in sections if section.table}
    write_text(out_dir / TABLES_FILE, json.dumps(tables, indent=1, ensure_ascii=False) + "\n")
    return markdown, page


def read_tables(out_dir: str | Path) -> dict[str, list[list[str]]]:
    """The tables a report in ``out_dir`` holds, by section title."""
    return json.loads((Path(out_dir) / TABLES_FILE).read_text(encoding="utf-8"))
