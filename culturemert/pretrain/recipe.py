"""Pre-training recipes: plain dataclasses read from YAML, with dotted ``key=value`` overrides.

A recipe names where training starts (``init``), the teacher whose targets it learns
(``teacher``), the objective's settings, the corpora (``data``), the engine, and a list of
``stages``; each stage has its own trainable parameters, data mixture, learning-rate schedule,
length, batch and optimizer. Every value can be overridden as ``stages.0.steps=10`` (list items
by index or by stage name: ``stages.heads.steps=10``). Errors name the offending field.
"""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

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


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


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
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from None
    return recipe_from_dict(raw, overrides, where=str(path))


def recipe_from_dict(
    raw: dict, overrides: typing.Sequence[str] = (), *, where: str = "recipe"
) -> Recipe:
    """Build and validate a recipe from a dict (as read from YAML) plus overrides."""
    raw = copy.deepcopy(raw)
    try:
        for override in overrides:
            apply_override(raw, override)
        recipe = _build(Recipe, raw, "")
        _validate(recipe)
    except RecipeError as error:
        raise RecipeError(f"{where}: {error}") from None
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain YAML-ready data (what a run writes next to its outputs)."""
    return _plain(recipe)


def apply_override(raw: dict, override: str) -> None:
    """Set ``a.b.0.c=value`` in ``raw``; the value is parsed as YAML (``10``, ``[heads, cnn]``)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {override!r}: expected KEY=VALUE, e.g. stages.0.steps=10")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"override {override!r}: the value is not valid YAML ({error})") from None
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(f"override {override!r}: {where} is not inside a mapping or list")


def _list_index(items: list, part: str, where: str) -> int:
    """A list position from an index or, for stages, a stage name."""
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise RecipeError(f"{where}: index out of range (the list has {len(items)} items)")
        return index
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    raise RecipeError(f"{where}: no list item named {part!r}")


def _build(cls: type, raw: Any, where: str) -> Any:
    """A dataclass from a mapping, converting each field to its annotated type."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RecipeError(
            f"{prefix}{unknown[0]}: unknown field (expected one of {', '.join(known)})"
        )
    missing = [
        name
        for name, spec in known.items()
        if name not in raw and spec.default is MISSING and spec.default_factory is MISSING
    ]
    if missing:
        raise RecipeError(f"{prefix}{missing[0]}: required field is missing")
    return cls(
        **{name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in raw.items()}
    )


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to the type ``hint`` (YAML reads 5e-4 as a string: floats accept it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except RecipeError as error:
                errors.append(str(error).split(": ", 1)[-1])
        raise RecipeError(f"{where}: {' or '.join(errors)}")
    if is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise RecipeError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(
            _coerce(v, a, f"{where}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


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
        stage.crop_seconds * 24000 >= 400,
        f"{where}.crop_seconds",
        f"must cover at least one encoder frame (400 samples), got {stage.crop_seconds}",
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


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
