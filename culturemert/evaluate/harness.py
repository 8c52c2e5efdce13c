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
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import torch

from culturemert import __version__
from culturemert.devices import check_dtype, device_name, distributed_position, resolve_device
from culturemert.evaluate.datasets import ADAPTERS, SPLITS, Dataset, DatasetError, build_dataset
from culturemert.evaluate.features import FeatureCache, settings_for
from culturemert.evaluate.handcrafted import handcrafted_features, is_handcrafted
from culturemert.evaluate.metrics import bootstrap_roc_auc
from culturemert.evaluate.probes import WindowData
from culturemert.evaluate.results import Results, TaskResult
from culturemert.evaluate.selection import SelectionConfig, seed_metrics, select_probe
from culturemert.manifest import Track
from culturemert.model.checkpoint import resolve_source

_LIBRARIES = ("torch", "transformers", "numpy", "scikit-learn", "safetensors", "soundfile", "soxr")


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything that decides an evaluation's numbers, besides the encoder and the data."""

    tasks: tuple[str, ...] = ()
    data_root: str | None = None
    window_seconds: float | None = 30.0
    pool: str = "mean"
    threshold: float = 0.5
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    # Seconds of each recording encoded, per task (None: whole); unset tasks keep their
    # dataset's published truncation (makam 150 s, Hindustani 780 s, Carnatic 330 s).
    max_seconds: dict[str, float | None] = field(default_factory=dict)
    cache_dir: str | None = None  # default: $CULTUREMERT_CACHE or ~/.cache/culturemert/features
    dtype: str = "float32"  # the encoder's, when extracting features (a model keeps its own)
    # Where features are extracted and probes trained (None: this rank's GPU, else the CPU):
    # the numbers agree across devices to rounding (see bench/gpu.py for the measured gaps).
    device: str | None = None
    workers: int = 1  # audio-decoding processes ahead of the encoder


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


def check_tasks(tasks: Sequence[str]) -> list[str]:
    """The task names, or a :class:`DatasetError` naming the unknown ones and the known ones."""
    unknown = [t for t in tasks if t not in ADAPTERS]
    if unknown or not tasks:
        raise DatasetError(
            f"unknown task(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known tasks: {', '.join(ADAPTERS)}"
        )
    return list(tasks)


def check_max_seconds(max_seconds: dict[str, float | None]) -> None:
    """Raise a :class:`DatasetError` for a truncation of an unknown task or a non-positive one."""
    if not isinstance(max_seconds, dict):
        raise DatasetError(f"max_seconds must map task names to seconds, got {max_seconds!r}")
    unknown = [task for task in max_seconds if task not in ADAPTERS]
    bad = {
        task: s
        for task, s in max_seconds.items()
        if s is not None and not (isinstance(s, (int, float)) and s > 0)
    }
    if unknown or bad:
        raise DatasetError(
            f"max_seconds: unknown task(s) {unknown} or non-positive seconds {bad}; "
            f"known tasks: {', '.join(ADAPTERS)}"
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
) -> WindowData:
    tracks = dataset.split(split)
    if not tracks:
        raise DatasetError(f"{dataset.name}: the {split} split has no tracks with audio")
    features = cache.features(tracks, f"{dataset.name}-{split}", max_seconds)
    if features.failed:
        log(f"{dataset.name} {split}: {features.failure_summary()}")
    by_id = {t.track_id: t for t in tracks}
    labels = dataset.label_matrix([by_id[tid] for tid in features.track_ids])
    return WindowData(features.features, features.track_index, labels)


def evaluate_task(
    dataset: Dataset,
    cache: FeatureCache,
    config: EvaluationConfig,
    *,
    with_test: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TaskResult:
    """Select a probe for one dataset on validation (on ``device``); with ``with_test``, score
    it on test."""
    if dataset.missing:
        log(dataset.missing_summary())
    splits = SPLITS if with_test else ("train", "valid")
    limit = audio_limit(dataset, config)
    data = {split: _split_data(dataset, split, cache, limit, log) for split in splits}
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
        "split_checksums": {
            s: split_checksum(dataset.split(s), dataset.vocabulary) for s in splits
        },
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
    return entry


def evaluate_encoder(
    model: str | os.PathLike | torch.nn.Module,
    tasks: Sequence[str],
    data_root: str | os.PathLike,
    config: EvaluationConfig = EvaluationConfig(),
    *,
    name: str | None = None,
    with_test: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Results | None:
    """Evaluate ``model`` (a checkpoint folder, a loaded encoder, or ``features:KINDS`` for
    hand-made features) on ``tasks``: a results dict.

    Under ``torchrun`` every rank embeds its share of each split and rank 0 trains the probes
    and returns the results; the other ranks return None.
    """
    tasks = check_tasks(tasks)
    check_max_seconds(config.max_seconds)
    check_dtype(config.dtype)
    if config.workers < 0:
        raise ValueError(f"workers must be 0 or more, got {config.workers}")
    config = replace(config, tasks=tuple(tasks), data_root=str(data_root))
    name = name or _model_name(model)
    if is_handcrafted(model):
        model = handcrafted_features(model)
    elif not isinstance(model, torch.nn.Module):
        model = resolve_source(model)  # a hub id becomes its local snapshot
    datasets = {task: build_dataset(task, data_root) for task in tasks}  # all errors up front
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
            **asdict(config),
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


def load_evaluation_config(path: str | os.PathLike) -> EvaluationConfig:
    """An :class:`EvaluationConfig` from YAML (``tasks``, ``data_root``, ``selection.probe`` ...)."""
    import yaml

    from culturemert.evaluate.probes import ProbeSettings

    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of evaluation settings")
    try:
        selection = dict(raw.pop("selection", None) or {})
        probe = ProbeSettings(**(selection.pop("probe", None) or {}))
        for key in ("kinds", "learning_rates", "layers"):
            if selection.get(key) is not None:
                selection[key] = tuple(selection[key])
        tasks = raw.pop("tasks", ())
        tasks = tuple(tasks.split(",") if isinstance(tasks, str) else tasks)
        data_root = raw.pop("data_root", None)
        if data_root is not None:  # relative to the config file, like a manifest's paths
            data_root = str(path.parent / Path(data_root).expanduser())
        return EvaluationConfig(
            tasks=tasks,
            data_root=data_root,
            selection=SelectionConfig(**selection, probe=probe),
            **raw,
        )
    except TypeError as error:  # an unknown or misspelt key
        raise ValueError(f"{path}: {error}") from None


def validation_scorer(config_path: str | os.PathLike) -> Callable[[str | os.PathLike], float]:
    """A merge-sweep scorer: ``model_dir -> validation_score(model_dir, config from YAML)``."""
    config = load_evaluation_config(config_path)
    return lambda model_dir: validation_score(model_dir, config)


def validation_score(
    model_dir: str | os.PathLike | torch.nn.Module, eval_config: EvaluationConfig
) -> float:
    """Validation macro ROC-AUC of the selected probes, averaged over ``eval_config.tasks``."""
    if not eval_config.tasks or eval_config.data_root is None:
        raise ValueError("validation_score needs eval_config.tasks and eval_config.data_root")
    results = evaluate_encoder(
        model_dir,
        eval_config.tasks,
        eval_config.data_root,
        eval_config,
        with_test=False,
        progress=False,
        log=lambda message: None,
    )
    if results is None:
        raise ValueError("validation_score runs in one process (rank 0), not under torchrun")
    scores = [entry["validation"]["roc_auc"]["mean"] for entry in results["tasks"].values()]
    return sum(scores) / len(scores)


def _model_name(model: str | os.PathLike | torch.nn.Module) -> str:
    if isinstance(model, torch.nn.Module):
        config = getattr(model, "config", None)
        return getattr(config, "name_or_path", "") or type(model).__name__
    path = Path(model)
    return path.resolve().name if path.is_dir() else str(model)  # a folder, or a hub id
