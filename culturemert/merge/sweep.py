"""λ sweep: merge at each λ, score each merge with any callable, keep the best merge."""

from __future__ import annotations

import csv
import importlib
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from culturemert.atomic import atomic_directory
from culturemert.loggers import log_metrics, opened_loggers
from culturemert.merge.engine import merge_checkpoints, open_inputs
from culturemert.merge.recipe import MergeRecipe

Scorer = Callable[[Path], float]


@dataclass(frozen=True)
class SweepResult:
    """Scores per λ and where the best merge was kept."""

    lambdas: tuple[float, ...]
    scores: tuple[float, ...]
    best_lambda: float
    best_score: float
    output: Path


def parse_grid(spec: str) -> tuple[float, ...]:
    """``start:stop:step`` with ``stop`` included (``0.1:1.0:0.1``), or a list (``0.2,0.5``)."""
    try:
        if ":" not in spec:
            return tuple(float(value) for value in spec.split(","))
        start, stop, step = (float(value) for value in spec.split(":"))
    except ValueError as error:
        raise ValueError(f"λ grid {spec!r}: expected start:stop:step or a comma list") from error
    if step <= 0 or stop < start:
        raise ValueError(f"λ grid {spec!r}: needs start <= stop and a positive step")
    count = math.floor((stop - start) / step + 1e-9) + 1
    return tuple(round(start + i * step, 10) for i in range(count))


def resolve_scorer(spec: str) -> Scorer:
    """The scorer named by ``module:function``, or ``function(ARG)`` for ``module:function=ARG``."""
    target, has_argument, argument = spec.partition("=")
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"scorer {spec!r}: expected module:function or module:function=ARG")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"scorer {spec!r}: cannot import {target} ({error})") from error
    return function(argument) if has_argument else function


def sweep_lambda(
    recipe: MergeRecipe,
    lambdas: Sequence[float],
    scorer: Scorer,
    out: str | os.PathLike,
    *,
    metric: str = "score",
    maximize: bool = True,
    progress: bool = True,
    loggers: Sequence[str] = (),
    license: str | None = None,
    allow_non_finite: bool = False,
) -> SweepResult:
    """Merge at every λ, score each with ``scorer(model_dir)``, and keep the best merge in ``out``.

    Only the best merge so far stays on disk. ``out`` also gets ``sweep.csv``, ``sweep.md`` and
    ``sweep.png`` (``metric`` against λ), and its model card ends with the sweep table. The
    ``loggers`` named (tensorboard, wandb) get λ and ``metric`` per candidate under ``out/logs``,
    the candidate's position as the step. ``license`` and ``allow_non_finite`` are
    :func:`~culturemert.merge.engine.merge_checkpoints`'s.
    """
    if not lambdas:
        raise ValueError("an empty λ grid")
    inputs = open_inputs(recipe)
    # The loggers close (their files whole) before the staging folder becomes ``out``.
    with (
        atomic_directory(out) as staging,
        opened_loggers(loggers, staging, name=Path(out).name) as running,
    ):
        # Candidates are named by position, not by λ: two λ that print alike stay apart.
        candidates = staging / ".candidates"
        scores: list[float] = []
        best = 0
        for index, lam in enumerate(
            tqdm(lambdas, desc="λ sweep", unit="merge", disable=not progress)
        ):
            merged = candidates / str(index)
            merge_checkpoints(
                replace(recipe, lam=lam),
                merged,
                inputs=inputs,
                license=license,
                allow_non_finite=allow_non_finite,
                progress=progress,
            )
            scores.append(float(scorer(merged)))
            log_metrics(running, {"lambda": lam, metric: scores[-1]}, step=index)
            if index == 0 or _rank(scores[-1], maximize) > _rank(scores[best], maximize):
                if index > 0:
                    shutil.rmtree(candidates / str(best))
                best = index
            else:
                shutil.rmtree(merged)
        for item in (candidates / str(best)).iterdir():
            os.replace(item, staging / item.name)
        shutil.rmtree(candidates)
        table = _write_table(staging, lambdas, scores, best, metric)
        _plot(staging / "sweep.png", lambdas, scores, best, metric)
        with open(staging / "README.md", "a") as card:
            card.write(f"\n## λ sweep ({metric}, best λ = {lambdas[best]:g})\n\n{table}")
    return SweepResult(tuple(lambdas), tuple(scores), lambdas[best], scores[best], Path(out))


def _rank(score: float, maximize: bool) -> float:
    if math.isnan(score):
        return -math.inf
    return score if maximize else -score


def _write_table(
    directory: Path, lambdas: Sequence[float], scores: list[float], best: int, metric: str
) -> str:
    """Write sweep.csv and sweep.md; return the Markdown table."""
    with open(directory / "sweep.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["lambda", metric, "best"])
        for i, (lam, score) in enumerate(zip(lambdas, scores, strict=True)):
            writer.writerow([lam, score, int(i == best)])
    lines = [f"| λ | {metric} |", "| ---: | ---: |"]
    for i, (lam, score) in enumerate(zip(lambdas, scores, strict=True)):
        cell = f"**{score:.4f}**" if i == best else f"{score:.4f}"
        lines.append(f"| {lam:g} | {cell} |")
    table = "\n".join(lines) + "\n"
    (directory / "sweep.md").write_text(table)
    return table


def _plot(
    path: Path, lambdas: Sequence[float], scores: list[float], best: int, metric: str
) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    axes.plot(lambdas, scores, marker="o")
    axes.scatter([lambdas[best]], [scores[best]], s=120, facecolors="none", edgecolors="red")
    axes.set_xlabel("λ")
    axes.set_ylabel(metric)
    axes.set_title(f"best λ = {lambdas[best]:g}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
