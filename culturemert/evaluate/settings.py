"""The settings that decide an evaluation's numbers, importable without torch: pipelines and
command lines check them before any model is loaded.

:class:`EvaluationConfig` (extraction, truncation, device) holds a :class:`SelectionConfig`
(the search space) holding a :class:`ProbeSettings` (one probe's architecture and schedule);
:func:`evaluation_config` builds them through the one config layer.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from culturemert.config import ConfigError, apply_override, config_from_dict, read_yaml
from culturemert.frames import POOLS

KINDS = ("mlp", "linear")
DEFAULT_LEARNING_RATES = (5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)


@dataclass(frozen=True)
class ProbeSettings:
    """Architecture and training schedule shared by every probe of one batched run."""

    kind: str = "mlp"
    hidden: int = 512
    dropout: float = 0.2
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10  # early stopping: epochs without a better validation ROC-AUC
    lr_factor: float = 0.5  # ReduceLROnPlateau: rate *= factor (1.0: constant rate) ...
    lr_patience: int = 3  # ... after this many epochs without a gain

    def __post_init__(self):
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("hidden", "batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a whole number of at least 1, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.lr_factor <= 1.0:
            problems.append(f"lr_factor must be in (0, 1], got {self.lr_factor!r}")
        if not isinstance(self.lr_patience, int) or self.lr_patience < 0:
            problems.append(
                f"lr_patience must be a whole number of at least 0, got {self.lr_patience!r}"
            )
        if problems:
            raise ValueError("probe settings: " + "; ".join(problems))


@dataclass(frozen=True)
class SelectionConfig:
    """The search space and the probe training schedule."""

    kinds: tuple[str, ...] = ("mlp", "linear")
    learning_rates: tuple[float, ...] = DEFAULT_LEARNING_RATES
    seeds: int = 5
    layers: tuple[int, ...] | None = None  # None: every layer and the learned weighting
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    # Bounds memory (weights, Adam moments, best copies per probe). None: 84 on a CPU, where
    # larger passes gain nothing; a whole probe kind's grid at once on a GPU.
    probes_per_pass: int | None = None

    def __post_init__(self):
        if self.seeds < 1 or not self.learning_rates or not self.kinds:
            raise ValueError("selection needs at least one seed, learning rate and probe kind")
        if self.probes_per_pass is not None and self.probes_per_pass < 1:
            raise ValueError(f"probes_per_pass must be at least 1, got {self.probes_per_pass}")


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

    def __post_init__(self):
        if self.pool not in POOLS:  # probes read one vector per window
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")


def evaluation_config(
    raw: dict | None = None,
    overrides: Sequence[str] = (),
    *,
    where: str = "evaluation config",
    relative_to: str | os.PathLike | None = None,
) -> EvaluationConfig:
    """An :class:`EvaluationConfig` from plain data (as YAML reads it) and ``KEY=VALUE``
    overrides; ``tasks`` may be a comma-separated string, and a relative ``data_root`` is
    taken relative to ``relative_to`` (the config file's folder)."""
    raw = copy.deepcopy(raw or {})
    try:
        for override in overrides:
            apply_override(raw, override)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if isinstance(raw.get("tasks"), str):
        raw["tasks"] = [task.strip() for task in raw["tasks"].split(",") if task.strip()]
    config = config_from_dict(EvaluationConfig, raw, where=where)
    if config.data_root is not None and relative_to is not None:
        config = replace(
            config, data_root=str(Path(relative_to) / Path(config.data_root).expanduser())
        )
    return config


def load_evaluation_config(
    path: str | os.PathLike, overrides: Sequence[str] = ()
) -> EvaluationConfig:
    """An :class:`EvaluationConfig` from YAML (``tasks``, ``data_root``, ``selection.probe`` ...)."""
    path = Path(path)
    raw = read_yaml(path, "evaluation config")
    return evaluation_config(raw, overrides, where=str(path), relative_to=path.parent)
