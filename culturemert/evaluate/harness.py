"""Evaluating an encoder by probing: datasets -> cached features -> probe selection -> results.

:func:`evaluate_encoder` runs the whole protocol on several tasks and returns a results dict in
the shape of :mod:`culturemert.evaluate.results`. :func:`validation_score` is the cheap scalar
a weight-merging sweep can maximise: validation macro ROC-AUC of the selected probes, averaged
over tasks, without touching any test split.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import torch

from culturemert import __version__
from culturemert.config import to_dict
from culturemert.devices import check_dtype, device_name, distributed_position, resolve_device
from culturemert.evaluate.datasets import ADAPTERS, SPLITS, Dataset, DatasetError, build_dataset
from culturemert.evaluate.features import FeatureCache, settings_for
from culturemert.evaluate.handcrafted import handcrafted_features, is_handcrafted
from culturemert.evaluate.metrics import bootstrap_roc_auc
from culturemert.evaluate.probes import WindowData
from culturemert.evaluate.results import Predictions, Results, TaskResult
from culturemert.evaluate.selection import seed_metrics, select_probe
from culturemert.evaluate.settings import (
    EvaluationConfig,
    load_evaluation_config,
)
from culturemert.manifest import Track
from culturemert.model.checkpoint import resolve_source
from culturemert.model.encoder import Encoder

_LIBRARIES = ("torch", "transformers", "numpy", "scikit-learn", "safetensors", "soundfile", "soxr")


def default_cache_dir() -> Path:
    """Where features are cached unless told otherwise."""
    found = os.environ.get("CULTUREMERT_CACHE")
    return Path(found) if found else Path.home() / ".cache" / "culturemert" / "features"


def split_checksum(tracks: Sequence[Track], vocabulary: Sequence[str]) -> str:
    """sha256 of a split's track ids and in-vocabulary tags: two runs compare only if equal."""
    known = set(vocabulary)
    rows = sorted((t.track_id, sorted(set(t.tags) & known)) for t in tracks)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers."""
    versions = {"python": platform.python_version(), "culturemert": __version__}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def task_datasets(tasks: Sequence[str], data_root: str | os.PathLike | None) -> list[Dataset]:
    """The datasets of the named tasks under ``data_root``; every error up front."""
    unknown = [t for t in tasks if t not in ADAPTERS]
    if unknown or not tasks:
        raise DatasetError(
            f"unknown task(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known tasks: {', '.join(ADAPTERS)}"
        )
    if data_root is None:
        raise DatasetError("no data root given (the folder holding one folder per task)")
    return [build_dataset(task, data_root) for task in tasks]


def check_max_seconds(max_seconds: dict[str, float | None], names: Sequence[str]) -> None:
    """Raise a :class:`DatasetError` for a truncation of an unknown task (neither a known task
    nor one of ``names``, the datasets evaluated) or a non-positive one."""
    if not isinstance(max_seconds, dict):
        raise DatasetError(f"max_seconds must map task names to seconds, got {max_seconds!r}")
    unknown = [task for task in max_seconds if task not in names and task not in ADAPTERS]
    bad = {
        task: s
        for task, s in max_seconds.items()
        if s is not None and not (isinstance(s, (int, float)) and s > 0)
    }
    if unknown or bad:
        raise DatasetError(
            f"max_seconds: unknown task(s) {unknown} or non-positive seconds {bad}; "
            f"known tasks: {', '.join([*names, *(t for t in ADAPTERS if t not in names)])}"
        )


def audio_limit(dataset: Dataset, config: EvaluationConfig) -> float | None:
    """Seconds of each of ``dataset``'s recordings to encode: the config's, else the dataset's."""
    return config.max_seconds.get(dataset.name, dataset.max_seconds)


def _split_data(
    dataset: Dataset,
    split: str,
    cache: FeatureCache,
    max_seconds: float | None,
    log: Callable[[str], None],
) -> tuple[WindowData, str, list[str]]:
    """The split's window features and labels, the checksum of the tracks embedded, and their
    ids."""
    tracks = dataset.split(split)
    if not tracks:
        raise DatasetError(f"{dataset.name}: the {split} split has no tracks with audio")
    features = cache.features(tracks, f"{dataset.name}-{split}", max_seconds)
    if features.failed:
        log(f"{dataset.name} {split}: {features.failure_summary()}")
    by_id = {t.track_id: t for t in tracks}
    kept = [by_id[tid] for tid in features.track_ids]
    data = WindowData(features.features, features.track_index, dataset.label_matrix(kept))
    return data, split_checksum(kept, dataset.vocabulary), list(features.track_ids)


def evaluate_task(
    dataset: Dataset,
    cache: FeatureCache,
    config: EvaluationConfig,
    *,
    with_test: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    predictions: dict[str, Predictions] | None = None,
) -> TaskResult:
    """Select a probe for one dataset on validation (on ``device``); with ``with_test``, score
    it on test (and keep the test predictions in ``predictions[dataset.name]`` if given)."""
    if dataset.missing:
        log(dataset.missing_summary())
    splits = SPLITS if with_test else ("train", "valid")
    limit = audio_limit(dataset, config)
    embedded = {split: _split_data(dataset, split, cache, limit, log) for split in splits}
    data = {split: features for split, (features, _, _) in embedded.items()}
    try:
        selection = select_probe(
            data["train"],
            data["valid"],
            data.get("test"),
            config.selection,
            device=device,
            progress=progress,
        )
    except ValueError as error:  # e.g. a validation split too small to score
        raise DatasetError(f"{dataset.name}: {error}") from None
    chosen = selection.chosen
    entry: TaskResult = {
        "split_checksums": {split: checksum for split, (_, checksum, _) in embedded.items()},
        "selected": {"layer": chosen["layer"], "probe": chosen["kind"], "lr": chosen["lr"]},
    }
    entry["validation"] = {
        "roc_auc": {"mean": chosen["validation_roc_auc"], "std": chosen["validation_std"]},
        "best_epochs": chosen["best_epochs"],
        "layer_weights": selection.layer_weights,
        "grid": selection.grid,
    }
    entry["tracks"] = {s: int(len(data[s].labels)) for s in splits}
    entry["missing_audio"] = len(dataset.missing)
    if with_test:
        labels = data["test"].labels
        entry.update(
            seed_metrics(selection.test_scores, labels, dataset.vocabulary, config.threshold)
        )
        # Seed-averaged predictions, resampled over test tracks: the noise of the split itself.
        entry["roc_auc_interval"] = list(bootstrap_roc_auc(labels, selection.test_scores.mean(0)))
        if predictions is not None:
            predictions[dataset.name] = Predictions(
                embedded["test"][2], labels, selection.test_scores.mean(0), dataset.vocabulary
            )
    return entry


def evaluate_encoder(
    model: str | os.PathLike | Encoder | torch.nn.Module,
    datasets: Sequence[Dataset] | None = None,
    config: EvaluationConfig = EvaluationConfig(),
    *,
    name: str | None = None,
    with_test: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    predictions: dict[str, Predictions] | None = None,
) -> Results | None:
    """Evaluate ``model`` (a checkpoint folder, a loaded encoder, or ``features:KINDS`` for
    hand-made features) on ``datasets`` (default: ``config.tasks`` under ``config.data_root``),
    with one feature cache and one encoder load: a results dict keyed by dataset name.

    Under ``torchrun`` every rank embeds its share of each split and rank 0 trains the probes
    and returns the results; the other ranks return None. ``predictions``, if given, receives
    each task's seed-averaged test predictions (what paired comparisons of models resample).
    """
    if datasets is None:
        datasets = task_datasets(config.tasks, config.data_root)
    datasets = {dataset.name: dataset for dataset in datasets}
    check_max_seconds(config.max_seconds, list(datasets))
    check_dtype(config.dtype)
    if config.workers < 0:
        raise ValueError(f"workers must be 0 or more, got {config.workers}")
    config = replace(config, tasks=tuple(datasets))
    name = name or _model_name(model)
    if is_handcrafted(model):
        model = handcrafted_features(model)
    elif not isinstance(model, (Encoder, torch.nn.Module)):
        model = resolve_source(model)  # a hub id becomes its local snapshot
    device = resolve_device(config.device)
    settings = settings_for(
        model, pool=config.pool, window_seconds=config.window_seconds, dtype=config.dtype
    )
    cache = FeatureCache(
        model,
        config.cache_dir or default_cache_dir(),
        settings,
        device=device,
        workers=config.workers,
        progress=progress,
    )
    rank, world_size, _ = distributed_position()
    if rank != 0:  # this rank's share of every split's features; rank 0 does the rest
        for dataset in datasets.values():
            for split in SPLITS if with_test else ("train", "valid"):
                tracks = dataset.split(split)
                cache.contribute(tracks, f"{dataset.name}-{split}", audio_limit(dataset, config))
        return None
    results: Results = {
        "model": name,
        "culturemert_version": __version__,
        "config": {
            **to_dict(config),
            "max_seconds": {task: audio_limit(d, config) for task, d in datasets.items()},
            "extraction": asdict(settings),
            "encoder": cache.fingerprint,
        },
        "versions": library_versions(),
        "runtime": runtime_description(device, world_size),
        "tasks": {},
    }
    for task, dataset in datasets.items():
        results["tasks"][task] = evaluate_task(
            dataset,
            cache,
            config,
            with_test=with_test,
            device=device,
            progress=progress,
            log=log,
            predictions=predictions,
        )
    return results


def runtime_description(device: torch.device, world_size: int = 1) -> dict:
    """Where an evaluation ran: device and its name, torch threads, processes."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "processes": world_size,
    }


def validation_score(
    model_dir: str | os.PathLike | torch.nn.Module,
    eval_config: EvaluationConfig,
    datasets: Sequence[Dataset] | None = None,
) -> float:
    """Validation macro ROC-AUC of the selected probes, averaged over the datasets (default:
    ``eval_config.tasks`` under ``eval_config.data_root``); no test split is touched."""
    results = evaluate_encoder(
        model_dir,
        datasets,
        eval_config,
        with_test=False,
        progress=False,
        log=lambda message: None,
    )
    if results is None:
        raise ValueError("validation_score runs in one process (rank 0), not under torchrun")
    scores = [entry["validation"]["roc_auc"]["mean"] for entry in results["tasks"].values()]
    return sum(scores) / len(scores)


def validation_scorer(
    config: str | os.PathLike | EvaluationConfig, datasets: Sequence[Dataset] | None = None
) -> Callable[[str | os.PathLike], float]:
    """A merge-sweep scorer, ``model_dir -> validation_score``, from an evaluation config
    (a YAML file or a config) and its datasets."""
    if not isinstance(config, EvaluationConfig):
        config = load_evaluation_config(config)
    return lambda model_dir: validation_score(model_dir, config, datasets)


def _model_name(model: str | os.PathLike | Encoder | torch.nn.Module) -> str:
    if isinstance(model, (Encoder, torch.nn.Module)):
        module = model.module if isinstance(model, Encoder) else model
        config = getattr(module, "config", None)
        return getattr(config, "name_or_path", "") or type(model).__name__
    path = Path(model)
    return path.resolve().name if path.is_dir() else str(model)  # a folder, or a hub id
