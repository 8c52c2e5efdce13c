"""What to merge and how: a dataclass read by :mod:`culturemert.config`, written back to YAML."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from culturemert.config import ConfigError, apply_override, config_from_dict, read_yaml
from culturemert.merge.methods import METHODS, MergeOptions, trims_by_magnitude

SCOPES = ("global", "tensor")
WEIGHT_NORM_MODES = ("effective", "raw")
NON_ENCODER_POLICIES = ("base", "merge", "drop")
COMBINES = ("task_arithmetic", "ties")
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class MergeRecipe:
    """A merge of ``models`` onto ``base`` (directories or hub ids) and its hyperparameters."""

    base: str
    models: tuple[str, ...]
    method: str = "task_arithmetic"
    lam: float | tuple[float, ...] = 1.0  # λ; "lambda" in YAML
    weights: tuple[float, ...] | None = None
    density: float = 0.2  # TIES: fraction of each task vector kept
    scope: str = "global"  # TIES trim over the whole model (as in the paper) or per "tensor"
    drop: float = 0.5  # DARE drop probability
    combine: str = "task_arithmetic"  # DARE: how the survivors are combined
    seed: int = 0  # DARE
    weight_norm: str = "effective"  # merge weight-normed convs as g·v/‖v‖, or g and v "raw"
    non_encoder: str = "base"  # masked_spec_embed and pre-training heads: from base/merge/drop
    include: tuple[str, ...] = ()  # regexes: tensors merged whatever the policy says
    exclude: tuple[str, ...] = ()  # regexes: tensors taken from the base
    dtype: str | None = None  # output dtype (default: the base's)

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if not self.models:
            problems.append("no models to merge")
        for name, value, allowed in (
            ("scope", self.scope, SCOPES),
            ("weight_norm", self.weight_norm, WEIGHT_NORM_MODES),
            ("non_encoder", self.non_encoder, NON_ENCODER_POLICIES),
            ("combine", self.combine, COMBINES),
        ):
            if value not in allowed:
                problems.append(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if self.dtype is not None and self.dtype not in OUTPUT_DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}")
        if not 0 < self.density <= 1:
            problems.append(f"density {self.density} is not in (0, 1]")
        if not 0 <= self.drop < 1:
            problems.append(f"drop {self.drop} is not in [0, 1)")
        for name, values in (("weights", self.weights), ("lambda", self.lam)):
            if isinstance(values, tuple) and len(values) != len(self.models):
                problems.append(f"{len(values)} {name} for {len(self.models)} models")
        if trims_by_magnitude(self.method, self.options()):
            if isinstance(self.lam, tuple):
                problems.append("TIES takes a single lambda, not one per model")
            if self.weights is not None and min(self.weights) <= 0:
                problems.append("TIES weights must be positive")
        for pattern in self.include + self.exclude:
            try:
                re.compile(pattern)
            except re.error as error:
                problems.append(f"bad name filter {pattern!r}: {error}")
        if problems:
            raise ValueError("invalid merge recipe: " + "; ".join(problems))

    def options(self) -> MergeOptions:
        """The method hyperparameters of this recipe."""
        return MergeOptions(
            lam=self.lam,
            weights=self.weights,
            density=self.density,
            drop=self.drop,
            combine=self.combine,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as YAML-ready plain data (the keys :func:`recipe_from_dict` reads)."""
        return {
            "lambda" if key == "lam" else key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }


def recipe_from_dict(
    raw: dict[str, Any], overrides: Sequence[str] = (), *, where: str = "recipe"
) -> MergeRecipe:
    """Build a recipe from YAML data and ``KEY=VALUE`` overrides; ``models`` entries are paths
    or ``{path, weight}`` maps, and ``lambda`` is λ."""
    values = copy.deepcopy(raw)
    try:
        for override in overrides:
            apply_override(values, override)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if "lambda" in values:
        values["lam"] = values.pop("lambda")
    entries = values.get("models") or []
    if any(isinstance(entry, dict) and "path" not in entry for entry in entries):
        raise ConfigError(f"{where}: models: every entry is a path or has a path key")
    if any(isinstance(entry, dict) for entry in entries):
        if "weights" in values:
            raise ConfigError(f"{where}: give weights either per model or as a list")
        values["weights"] = [
            entry.get("weight", 1.0) if isinstance(entry, dict) else 1.0 for entry in entries
        ]
    values["models"] = [entry["path"] if isinstance(entry, dict) else entry for entry in entries]
    return config_from_dict(MergeRecipe, values, where=where)


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> MergeRecipe:
    """Read a merge recipe from a YAML file, with ``KEY=VALUE`` overrides."""
    return recipe_from_dict(read_yaml(path, "merge recipe"), overrides, where=str(path))


def recipe_yaml(recipe: MergeRecipe) -> str:
    """The recipe as YAML text that :func:`load_recipe` reads back."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
