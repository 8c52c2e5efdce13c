"""Pre-training recipes: dataclasses read by :mod:`culturemert.config`, with ``key=value`` overrides.

A recipe names where training starts (``init``), the teacher whose targets it learns
(``teacher``), the objective's settings, the corpora (``data``), the engine, and a list of
``stages``; each stage has its own trainable parameters, data mixture, learning-rate schedule,
length, batch and optimizer. Every value can be overridden as ``stages.0.steps=10`` (list items
by index or by stage name: ``stages.heads.steps=10``). Errors name the offending field.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from culturemert.config import ConfigError, config_from_dict, read_yaml, to_dict
from culturemert.frames import MIN_SAMPLES, SAMPLE_RATE
from culturemert.loggers import LoggerError, logger_names
from culturemert.pretrain.objective import ObjectiveConfig
from culturemert.pretrain.schedule import DECAY_SHAPES, SCHEDULE_KINDS, ScheduleConfig

#: Named parameter groups a stage can train (anything else is read as a parameter-name glob).
PARAMETER_GROUPS = ("heads", "cnn", "projection", "encoder", "all")
#: Recipe precision → Lightning Fabric precision.
PRECISIONS = {
    "32": "32-true",
    "32-true": "32-true",
    "bf16-mixed": "bf16-mixed",
    "16-mixed": "16-mixed",
}
STRATEGIES = ("auto", "ddp", "fsdp")


#: A recipe that cannot be used; the message names the file and the field.
RecipeError = ConfigError


@dataclass
class TeacherConfig:
    """The precomputed targets a run learns from, and the teacher hash they must carry."""

    targets: str
    hash: str


@dataclass
class DataConfig:
    """The corpora: manifests of the target traditions and, optionally, of Western replay audio."""

    manifests: list[str]
    replay_manifest: str | None = None
    num_workers: int = 2


@dataclass
class MixtureConfig:
    """Which traditions a stage samples: a list (weighted by their hours) or tradition → ratio."""

    traditions: list[str] | dict[str, float]
    replay: float = 0.0  # share of crops drawn from ``data.replay_manifest``


@dataclass
class OptimizerConfig:
    """AdamW settings; the defaults are MERT's (fairseq Adam with decoupled weight decay)."""

    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 10.0  # max gradient norm; 0 turns clipping off


@dataclass
class StageConfig:
    """One stage of continual pre-training."""

    name: str
    trainable: list[str]
    mixture: MixtureConfig
    schedule: ScheduleConfig
    steps: int
    batch_seconds: float  # audio per optimizer update, summed over devices and accumulation
    crop_seconds: float = 5.0
    accumulate: int = 1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # Updates after which the encoder is also exported, to snapshots/<stage>-<name>-<updates>
    # (learning curves: probe the encoder part-way through a stage).
    snapshots: list[int] = field(default_factory=list)

    @property
    def crops_per_step(self) -> int:
        """Clips per optimizer update (``batch_seconds / crop_seconds``)."""
        return round(self.batch_seconds / self.crop_seconds)


@dataclass
class EngineConfig:
    """Lightning Fabric settings; under torchrun/SLURM devices and nodes must match the launch."""

    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto, ddp or fsdp
    precision: str = "32"  # 32, bf16-mixed or 16-mixed
    loggers: list[str] = field(default_factory=list)  # tensorboard, wandb (metrics.csv always)


@dataclass
class Recipe:
    """A whole continual pre-training run."""

    init: str  # Hugging Face-layout encoder folder, or a training checkpoint of ours (.ckpt)
    teacher: TeacherConfig
    objective: ObjectiveConfig
    data: DataConfig
    stages: list[StageConfig]
    engine: EngineConfig = field(default_factory=EngineConfig)
    seed: int = 0
    checkpoint_every: int = 500  # optimizer updates between checkpoints
    log_every: int = 10


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe, apply ``key=value`` overrides, and check every field."""
    return recipe_from_dict(read_yaml(path, "recipe"), overrides, where=str(path))


def recipe_from_dict(
    raw: dict, overrides: typing.Sequence[str] = (), *, where: str = "recipe"
) -> Recipe:
    """Build and validate a recipe from a dict (as read from YAML) plus overrides."""
    recipe = config_from_dict(Recipe, raw, overrides, where=where)
    try:
        _validate(recipe)
    except RecipeError as error:
        raise RecipeError(f"{where}: {error}") from None
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain YAML-ready data (what a run writes next to its outputs)."""
    return to_dict(recipe)


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise RecipeError(f"{where}: {message}")


def _validate(recipe: Recipe) -> None:
    """Range and consistency checks that types alone do not express."""
    _check(
        re.fullmatch(r"[0-9a-f]{64}", recipe.teacher.hash) is not None,
        "teacher.hash",
        "expected the teacher's 64-hex-digit hash (teacher_hash in the targets' index.json, "
        f"printed by `culturemert targets`), got {recipe.teacher.hash!r}",
    )
    _check(bool(recipe.stages), "stages", "a recipe needs at least one stage")
    _check(bool(recipe.data.manifests), "data.manifests", "list at least one manifest")
    _check(recipe.data.num_workers >= 0, "data.num_workers", "must be ≥ 0")
    _check(recipe.checkpoint_every >= 1, "checkpoint_every", "must be ≥ 1")
    _check(recipe.log_every >= 1, "log_every", "must be ≥ 1")
    engine = recipe.engine
    _check(
        engine.precision in PRECISIONS, "engine.precision", f"use one of {', '.join(PRECISIONS)}"
    )
    _check(engine.strategy in STRATEGIES, "engine.strategy", f"use one of {', '.join(STRATEGIES)}")
    _check(engine.devices >= 1, "engine.devices", "must be ≥ 1")
    _check(engine.num_nodes >= 1, "engine.num_nodes", "must be ≥ 1")
    try:
        logger_names(engine.loggers, "engine.loggers")
    except LoggerError as error:
        raise RecipeError(str(error)) from None
    names = [stage.name for stage in recipe.stages]
    for index, stage in enumerate(recipe.stages):
        _validate_stage(stage, f"stages.{index}", recipe)
        _check(stage.name not in names[:index], f"stages.{index}.name", f"{stage.name!r} repeats")


def _validate_stage(stage: StageConfig, where: str, recipe: Recipe) -> None:
    _check(
        re.fullmatch(r"[A-Za-z0-9._-]+", stage.name) is not None,
        f"{where}.name",
        f"use letters, digits, '.', '_' or '-' (it names the stage's output folder), got {stage.name!r}",
    )
    _check(
        bool(stage.trainable),
        f"{where}.trainable",
        f"list groups ({', '.join(PARAMETER_GROUPS)}) or globs",
    )
    _check(stage.steps >= 1, f"{where}.steps", f"must be ≥ 1, got {stage.steps}")
    _check(stage.accumulate >= 1, f"{where}.accumulate", f"must be ≥ 1, got {stage.accumulate}")
    _check(
        all(1 <= k < stage.steps for k in stage.snapshots),
        f"{where}.snapshots",
        f"list updates between 1 and steps − 1 ({stage.steps - 1}), got {stage.snapshots}",
    )
    _check(
        stage.crop_seconds * SAMPLE_RATE >= MIN_SAMPLES,
        f"{where}.crop_seconds",
        f"must cover at least one encoder frame ({MIN_SAMPLES} samples), got {stage.crop_seconds}",
    )
    crops = stage.batch_seconds / stage.crop_seconds
    _check(
        stage.batch_seconds > 0 and crops >= 1 and math.isclose(crops, round(crops), abs_tol=1e-6),
        f"{where}.batch_seconds",
        f"must be a positive multiple of crop_seconds={stage.crop_seconds}, got {stage.batch_seconds}",
    )
    mixture = stage.mixture
    _check(bool(mixture.traditions), f"{where}.mixture.traditions", "name at least one tradition")
    if isinstance(mixture.traditions, dict):
        for name, weight in mixture.traditions.items():
            _check(weight >= 0, f"{where}.mixture.traditions.{name}", f"must be ≥ 0, got {weight}")
        _check(
            sum(mixture.traditions.values()) > 0, f"{where}.mixture.traditions", "weights sum to 0"
        )
    _check(
        0 <= mixture.replay < 1,
        f"{where}.mixture.replay",
        f"must be in [0, 1), got {mixture.replay}",
    )
    _check(
        mixture.replay == 0 or recipe.data.replay_manifest is not None,
        f"{where}.mixture.replay",
        "a replay share needs data.replay_manifest",
    )
    schedule = stage.schedule
    _check(
        schedule.kind in SCHEDULE_KINDS,
        f"{where}.schedule.kind",
        f"use one of {', '.join(SCHEDULE_KINDS)}",
    )
    _check(
        schedule.decay in DECAY_SHAPES,
        f"{where}.schedule.decay",
        f"use one of {', '.join(DECAY_SHAPES)}",
    )
    _check(
        schedule.peak_lr > 0, f"{where}.schedule.peak_lr", f"must be > 0, got {schedule.peak_lr}"
    )
    _check(schedule.start_lr >= 0, f"{where}.schedule.start_lr", "must be ≥ 0")
    _check(schedule.end_lr >= 0, f"{where}.schedule.end_lr", "must be ≥ 0")
    _check(
        0 <= schedule.warmup_steps <= stage.steps,
        f"{where}.schedule.warmup_steps",
        f"must be in [0, steps={stage.steps}], got {schedule.warmup_steps}",
    )
    _check(
        0 <= schedule.cooldown_steps <= stage.steps - schedule.warmup_steps,
        f"{where}.schedule.cooldown_steps",
        f"must be in [0, steps − warmup_steps = {stage.steps - schedule.warmup_steps}]",
    )
    optimizer = stage.optimizer
    _check(
        all(0 <= b < 1 for b in optimizer.betas),
        f"{where}.optimizer.betas",
        "each must be in [0, 1)",
    )
    _check(optimizer.eps > 0, f"{where}.optimizer.eps", "must be > 0")
    _check(optimizer.weight_decay >= 0, f"{where}.optimizer.weight_decay", "must be ≥ 0")
    _check(optimizer.grad_clip >= 0, f"{where}.optimizer.grad_clip", "must be ≥ 0 (0: no clipping)")
