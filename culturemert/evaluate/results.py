"""The results file of one evaluation run: written by ``culturemert evaluate``, read by ``report``.

One JSON object per run; every metric value is a fraction in [0, 1] (reports print percent)::

    {
      "model": "ntua-slp/CultureMERT-95M",          # what was evaluated, as shown in reports
      "culturemert_version": "0.1.0",
      "config": {...},                               # evaluation settings (probe grid, seeds...)
      "versions": {"torch": "...", ...},             # library versions of the run
      "runtime": {"device": "cuda:0", "device_name": "...", "threads": 16, "processes": 1},
      "replica": 2,                                  # optional: which pre-training replica
      "tasks": {
        "makam": {
          "split_checksums": {"train": "<sha256>", "valid": "...", "test": "..."},
          "selected": {"layer": 7 or "weighted", "probe": "mlp" or "linear", "lr": 0.001},
          "metrics": {"roc_auc": {"mean": 0.896, "std": 0.004}, "map": {...},
                      "micro_f1": {...}, "macro_f1": {...}},   # test split, over seeds
          "per_tag": {"makam--Hicaz": {"roc_auc": ..., "map": ..., "f1": ...}, ...},
          "per_family": {"makam": {"roc_auc": ..., "map": ..., "micro_f1": ..., "macro_f1": ...}},
          "excluded_tags": 0,                        # tags without both classes in test
          "roc_auc_interval": [0.87, 0.92],          # 95% bootstrap over test tracks
          "tracks": {"train": 3709, ...},            # tracks evaluated per split
          "missing_audio": 0,                        # listed tracks without an audio file
          "validation": {...}                        # selection details (grid, best epochs...)
        }
      }
    }

``culturemert.evaluate.metrics.summarize_seeds`` produces the ``metrics``, ``per_tag``,
``per_family`` and ``excluded_tags`` entries from per-seed metric dicts. Published numbers
(``paper_results.json``) use the same shape with ``std`` null and ``source`` set.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import numpy as np

from culturemert.atomic import atomic_path, write_text

METRICS = ("roc_auc", "map", "micro_f1", "macro_f1")


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file and the field."""


class MetricSummary(TypedDict):
    """One metric over seeds (``std`` is None for published single numbers)."""

    mean: float
    std: float | None


class Selection(TypedDict, total=False):
    """The probe configuration chosen on the validation split."""

    layer: int | str
    probe: str
    lr: float


class TaskResult(TypedDict, total=False):
    """Everything reported for one task; ``metrics`` is absent from validation-only runs."""

    split_checksums: dict[str, str]
    selected: Selection
    metrics: dict[str, MetricSummary]
    per_tag: dict[str, dict[str, float]]
    per_family: dict[str, dict[str, float]]
    excluded_tags: int
    roc_auc_interval: list[float]
    tracks: dict[str, int]
    missing_audio: int
    validation: dict


class Results(TypedDict, total=False):
    """One evaluation run; ``model`` and ``tasks`` are required."""

    model: str
    culturemert_version: str
    config: dict
    versions: dict[str, str]
    runtime: dict
    tasks: dict[str, TaskResult]
    source: str
    replica: int  # which pre-training replica of the model (pipelines with replicates)


def validate_results(results: dict, where: str) -> Results:
    """Check the required fields and metric ranges; errors name ``where`` and the field."""
    if not isinstance(results, dict) or not isinstance(results.get("model"), str):
        raise ResultsError(f"{where}: expected an object with a string 'model'")
    tasks = results.get("tasks")
    if not isinstance(tasks, dict):
        raise ResultsError(f"{where}: expected an object 'tasks' (task name -> result)")
    for task, entry in tasks.items():
        metrics = entry.get("metrics", {}) if isinstance(entry, dict) else None
        if not isinstance(metrics, dict):
            raise ResultsError(f"{where}: tasks.{task}: expected an object with 'metrics'")
        for name, summary in metrics.items():
            mean = summary.get("mean") if isinstance(summary, dict) else None
            if not isinstance(mean, (int, float)) or not 0.0 <= mean <= 1.0:
                raise ResultsError(
                    f"{where}: tasks.{task}.metrics.{name}.mean must be a fraction in [0, 1], "
                    f"got {mean!r}"
                )
    return results  # type: ignore[return-value]


def save_results(path: str | os.PathLike, results: Results) -> Path:
    """Validate and write a results file atomically."""
    validate_results(results, str(path))
    return write_text(path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def task_rows(results: Results) -> list[dict[str, Any]]:
    """One row per task: the selected probe, its validation ROC-AUC, and each test metric's
    mean and std over seeds (blank where the run has none)."""
    rows = []
    for task, entry in results["tasks"].items():
        selected = entry.get("selected", {})
        validation = entry.get("validation", {}).get("roc_auc", {})
        row: dict[str, Any] = {
            "task": task,
            "layer": selected.get("layer", ""),
            "probe": selected.get("probe", ""),
            "lr": selected.get("lr", ""),
            "validation_roc_auc": validation.get("mean", ""),
        }
        for metric in METRICS:
            summary = entry.get("metrics", {}).get(metric, {})
            row[metric] = summary.get("mean", "")
            std = summary.get("std")
            row[f"{metric}_std"] = "" if std is None else std
        rows.append(row)
    return rows


def logged_values(results: Results) -> tuple[dict[str, Any], dict[str, float]]:
    """What experiment loggers record of a run: the model and each task's selected probe as
    hyperparameters, each task's validation and test numbers as ``TASK/COLUMN`` metrics."""
    params: dict[str, Any] = {"model": results["model"]}
    metrics: dict[str, float] = {}
    for row in task_rows(results):
        task = row.pop("task")
        for key in ("layer", "probe", "lr"):
            params[f"{task}/{key}"] = row.pop(key)
        metrics.update({f"{task}/{key}": value for key, value in row.items() if value != ""})
    return params, metrics


def save_task_table(path: str | os.PathLike, results: Results) -> Path:
    """Write :func:`task_rows` as CSV, atomically."""
    rows = task_rows(results)
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]) if rows else ["task"])
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def load_results(path: str | os.PathLike) -> Results:
    """Read and validate a results file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from None
    return validate_results(raw, str(path))


class Predictions(NamedTuple):
    """One task's test split as a probe saw it: track ids, 0/1 labels ``[tracks, tags]`` and
    seed-averaged probabilities of the same shape."""

    track_ids: Sequence[str]
    labels: np.ndarray
    scores: np.ndarray
    vocabulary: Sequence[str]


def save_predictions(path: str | os.PathLike, predictions: dict[str, Predictions]) -> Path:
    """Write every task's test predictions into one ``.npz`` file, atomically."""
    arrays = {}
    for task, entry in predictions.items():
        arrays[f"{task}/track_ids"] = np.asarray(entry.track_ids, dtype=str)
        arrays[f"{task}/labels"] = np.asarray(entry.labels, dtype=np.uint8)
        arrays[f"{task}/scores"] = np.asarray(entry.scores, dtype=np.float32)
        arrays[f"{task}/vocabulary"] = np.asarray(entry.vocabulary, dtype=str)
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_predictions(path: str | os.PathLike) -> dict[str, Predictions]:
    """Read a predictions file written by :func:`save_predictions` (never unpickling)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            tasks = dict.fromkeys(key.rsplit("/", 1)[0] for key in arrays.files)
            return {
                task: Predictions(
                    arrays[f"{task}/track_ids"].tolist(),
                    arrays[f"{task}/labels"],
                    arrays[f"{task}/scores"],
                    arrays[f"{task}/vocabulary"].tolist(),
                )
                for task in tasks
            }
    except (OSError, ValueError, KeyError) as error:
        raise ResultsError(f"{path}: not a readable predictions file ({error})") from None
