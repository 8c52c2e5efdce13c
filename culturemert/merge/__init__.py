"""Merging encoders in weight space: methods over tensors, a streaming engine, a λ sweep."""

from culturemert.merge.engine import MergeInputs, merge_checkpoints, open_inputs
from culturemert.merge.methods import (
    METHODS,
    MergeOptions,
    dare,
    kth_largest_magnitudes,
    linear,
    task_arithmetic,
    ties,
)
from culturemert.merge.recipe import MergeRecipe, load_recipe, recipe_from_dict
from culturemert.merge.sweep import SweepResult, parse_grid, sweep_lambda
from culturemert.merge.weights import MergeInputError

__all__ = [
    "METHODS",
    "MergeInputError",
    "MergeInputs",
    "MergeOptions",
    "MergeRecipe",
    "SweepResult",
    "dare",
    "kth_largest_magnitudes",
    "linear",
    "load_recipe",
    "merge_checkpoints",
    "open_inputs",
    "parse_grid",
    "recipe_from_dict",
    "sweep_lambda",
    "task_arithmetic",
    "ties",
]
