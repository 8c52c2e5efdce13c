"""The streaming merge engine: check the inputs, then merge and write one tensor at a time.

Inputs are memory-mapped and read one tensor at a time (each file is re-mapped every 32 MB read),
and output tensors are written as they are computed, so resident memory stays near the largest
tensor times the number of models. The output is streamed to a staging directory that replaces
``out`` only once complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from culturemert.atomic import atomic_directory
from culturemert.merge.card import merge_card
from culturemert.merge.methods import (
    METHODS,
    MergeOptions,
    keep_count,
    kth_largest_magnitudes,
    trimmed_vectors,
    trims_by_magnitude,
)
from culturemert.merge.recipe import MergeRecipe
from culturemert.merge.weights import (
    MergeInputError,
    TensorInfo,
    WeightSource,
    memoised_sha256,
    open_weights,
    write_safetensors,
)
from culturemert.model.card import write_card
from culturemert.model.finite import check_finite

# Tensors of HubertModel's encoder proper; anything else (masked_spec_embed, pre-training heads
# such as final_proj or label_embs_concat) follows the recipe's non-encoder policy.
ENCODER_PREFIXES = ("feature_extractor.", "feature_projection.", "encoder.")
# config.json fields that must agree between the base and every model.
ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "feat_proj_layer_norm",
    "do_stable_layer_norm",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "sample_rate",
)
# HuBERT-family positional convs use weight_norm(dim=2): one norm per kernel tap.
WEIGHT_NORM_DIM = 2
_G, _V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"
_LISTED = 20  # offending tensors listed per problem before "... and N more"


@dataclass(frozen=True)
class Unit:
    """Tensors merged as one: a single tensor, or a weight-normed conv's (g, v) folded to w."""

    names: tuple[str, ...]
    action: str  # "merge", "base" (copied from the base) or "drop"
    folded: bool = False


@dataclass(frozen=True)
class MergeInputs:
    """The opened base and models, their configs, and the merge plan."""

    base: WeightSource
    models: tuple[WeightSource, ...]
    base_config: dict
    units: tuple[Unit, ...]
    # (input, tensor) pairs already checked for NaN and infinity: global TIES and λ sweeps read
    # each tensor several times, and a tensor allowed through is logged only once.
    checked: set[tuple[int, str]] = field(default_factory=set, compare=False)

    def read(self, source: WeightSource, name: str, allow_non_finite: bool) -> Tensor:
        """One input tensor, refused (or, when allowed, logged once) if it holds NaN or infinity."""
        index = next((i for i, model in enumerate(self.models) if model is source), -1)
        tensor = source.read(name)
        if (index, name) not in self.checked:
            role = "base" if index < 0 else f"models[{index}]"
            where = source.files[0] if len(source.files) == 1 else source.directory
            hint = " (--allow-non-finite, allow_non_finite=True, merges them anyway)"
            check_finite(name, tensor, f"{role} {where}", allow=allow_non_finite, hint=hint)
            self.checked.add((index, name))
        return tensor


def open_inputs(recipe: MergeRecipe) -> MergeInputs:
    """Open and check every input against the base; one error lists every mismatch."""
    from culturemert.model.checkpoint import resolve_source

    directories = [resolve_source(source) for source in (recipe.base, *recipe.models)]
    configs = [_read_config(directory) for directory in directories]
    sources = [open_weights(directory) for directory in directories]
    problems = [
        problem
        for source, config in zip(sources[1:], configs[1:], strict=True)
        for problem in _mismatches(sources[0], configs[0], source, config)
    ]
    if problems:
        raise MergeInputError("the models do not match the base:\n" + "\n".join(problems))
    units = plan_units(sources[0], recipe)
    return MergeInputs(sources[0], tuple(sources[1:]), configs[0], units)


def plan_units(base: WeightSource, recipe: MergeRecipe) -> tuple[Unit, ...]:
    """Group the base's tensors into merge units and decide what happens to each."""
    units: list[Unit] = []
    for name, info in base.tensors.items():
        if name.endswith(_G):
            if name[: -len(_G)] + _V not in base.tensors:
                raise MergeInputError(f"{base.directory}: weight-norm gain {name} has no {_V}")
            continue  # planned with its direction tensor below
        if not name.endswith(_V):
            units.append(Unit((name,), _action((name,), info, recipe)))
            continue
        gain = name[: -len(_V)] + _G
        _check_weight_norm_pair(gain, base.tensors.get(gain), name, info)
        action = _action((gain, name), info, recipe)
        if recipe.weight_norm == "effective":
            units.append(Unit((gain, name), action, folded=True))
        else:
            units += [Unit((gain,), action), Unit((name,), action)]
    return tuple(units)


def merge_checkpoints(
    recipe: MergeRecipe,
    out: str | os.PathLike,
    *,
    inputs: MergeInputs | None = None,
    card_extra: str = "",
    license: str | None = None,
    allow_non_finite: bool = False,
    progress: bool = True,
) -> Path:
    """Merge ``recipe.models`` onto ``recipe.base`` into the Hugging Face-layout directory ``out``.

    ``out`` gets ``config.json`` (HubertModel), ``preprocessor_config.json`` (from the base),
    ``model.safetensors`` and a ``README.md`` card with the recipe, the inputs' sha256 and the
    licence their cards name (``license`` when they name none). ``inputs`` reuses already
    opened inputs (a λ sweep); ``card_extra`` is added to the card. An input tensor holding NaN
    or infinity stops the merge with nothing written, unless ``allow_non_finite`` (then it is
    logged and merged).
    """
    out = Path(out)
    inputs = inputs or open_inputs(recipe)
    # Hash on a second thread while merging: hashing costs about as much as merging.
    hasher = ThreadPoolExecutor(max_workers=1)
    hashes = {
        file: hasher.submit(memoised_sha256, file)
        for source in (inputs.base, *inputs.models)
        for file in source.files
    }
    try:
        options = recipe.options()
        if trims_by_magnitude(recipe.method, options) and recipe.scope == "global":
            thresholds = _global_thresholds(recipe, inputs, allow_non_finite, progress)
            options = replace(options, thresholds=thresholds)
        tensors = _merged_tensors(recipe, options, inputs, allow_non_finite, progress)
        with atomic_directory(out) as staging:
            layout = _output_layout(inputs, recipe)
            write_safetensors(staging / "model.safetensors", layout, tensors)
            _write_metadata(staging, recipe, inputs, hashes, card_extra, license)
    finally:
        hasher.shutdown(wait=False, cancel_futures=True)
    return out


def _merged_tensors(
    recipe: MergeRecipe,
    options: MergeOptions,
    inputs: MergeInputs,
    allow_non_finite: bool,
    progress: bool,
) -> Iterator[tuple[str, Tensor]]:
    """Every output tensor in layout order, computed one unit at a time."""
    method = METHODS[recipe.method]
    dtypes = _output_dtypes(inputs, recipe)
    kept = [unit for unit in inputs.units if unit.action != "drop"]
    total = sum(inputs.base.tensors[name].numel for unit in kept for name in unit.names)
    with tqdm(
        total=total, unit="param", unit_scale=True, desc="merge", disable=not progress
    ) as bar:
        for unit in kept:
            if unit.action == "merge":
                base, models = _read_unit(inputs, unit, allow_non_finite)
                merged = method(base, models, replace(options, seed=_unit_seed(recipe, unit)))
                tensors = _unfold(unit, merged) if unit.folded else [merged]
            else:
                tensors = [inputs.read(inputs.base, name, allow_non_finite) for name in unit.names]
            for name, tensor in zip(unit.names, tensors, strict=True):
                yield name, tensor.to(dtypes[name])
            bar.update(sum(inputs.base.tensors[name].numel for name in unit.names))


def _global_thresholds(
    recipe: MergeRecipe, inputs: MergeInputs, allow_non_finite: bool, progress: bool
) -> tuple[float, ...]:
    """Per-model |τ| cut-offs keeping the top ``density`` of all merged entries (TIES paper)."""
    merged = [unit for unit in inputs.units if unit.action == "merge"]
    numel = sum(_unit_numel(inputs, unit) for unit in merged)
    options = recipe.options()
    passes = iter(("trim threshold 1/2", "trim threshold 2/2"))

    def stream() -> Iterator[list[Tensor]]:
        for unit in tqdm(merged, desc=next(passes), unit="tensor", disable=not progress):
            base, models = _read_unit(inputs, unit, allow_non_finite)
            unit_options = replace(options, seed=_unit_seed(recipe, unit))
            yield trimmed_vectors(recipe.method, base, models, unit_options)

    ks = [keep_count(numel, recipe.density)] * len(inputs.models)
    return kth_largest_magnitudes(stream, ks)


def _read_unit(
    inputs: MergeInputs, unit: Unit, allow_non_finite: bool
) -> tuple[Tensor, list[Tensor]]:
    """The unit's base tensor and model tensors in float32 (weight-normed convs folded to w)."""

    def read(source: WeightSource) -> Tensor:
        tensors = [inputs.read(source, name, allow_non_finite).float() for name in unit.names]
        if unit.folded:
            gain, direction = tensors
            return torch._weight_norm(direction, gain, WEIGHT_NORM_DIM)
        return tensors[0]

    return read(inputs.base), [read(source) for source in inputs.models]


def _unfold(unit: Unit, weight: Tensor) -> list[Tensor]:
    """Split a merged conv weight back into (g, v) as torch's weight-norm right_inverse does."""
    return [torch.norm_except_dim(weight, 2, WEIGHT_NORM_DIM), weight]


def _unit_numel(inputs: MergeInputs, unit: Unit) -> int:
    return inputs.base.tensors[unit.names[-1]].numel


def _unit_seed(recipe: MergeRecipe, unit: Unit) -> int:
    # Per-tensor seeds make DARE masks independent of tensor order and of the other tensors.
    return zlib.crc32(f"{recipe.seed}:{unit.names[-1]}".encode())


def _action(names: tuple[str, ...], info: TensorInfo, recipe: MergeRecipe) -> str:
    def matches(patterns: tuple[str, ...]) -> bool:
        return any(re.search(pattern, name) for pattern in patterns for name in names)

    if not info.dtype.is_floating_point or matches(recipe.exclude):
        return "base"
    if matches(recipe.include) or names[0].startswith(ENCODER_PREFIXES):
        return "merge"
    return recipe.non_encoder


def _check_weight_norm_pair(
    gain_name: str, gain: TensorInfo | None, direction_name: str, direction: TensorInfo
) -> None:
    expected = (1, 1, direction.shape[WEIGHT_NORM_DIM]) if len(direction.shape) == 3 else None
    if gain is None or gain.shape != expected:
        raise MergeInputError(
            f"{direction_name} {direction.shape}: expected its weight-norm gain {gain_name} "
            f"with shape {expected} (weight_norm over dim {WEIGHT_NORM_DIM}), "
            f"found {gain.shape if gain else 'none'}"
        )


def _mismatches(
    base: WeightSource, base_config: dict, source: WeightSource, config: dict
) -> list[str]:
    """Problems of one model against the base, one line each."""
    problems = [
        f"{source.directory}: config {key} = {config[key]!r}, base has {base_config[key]!r}"
        for key in ARCHITECTURE_FIELDS
        if key in config and key in base_config and config[key] != base_config[key]
    ]
    missing = sorted(set(base.tensors) - set(source.tensors))
    extra = sorted(set(source.tensors) - set(base.tensors))
    shapes = sorted(
        f"{name} {source.tensors[name].shape} (base {info.shape})"
        for name, info in base.tensors.items()
        if name in source.tensors and source.tensors[name].shape != info.shape
    )
    for what, names in (("missing", missing), ("not in the base", extra), ("shape", shapes)):
        if names:
            listed = ", ".join(names[:_LISTED])
            more = f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
            problems.append(f"{source.directory}: {what}: {listed}{more}")
    return problems


def _read_config(directory: Path) -> dict:
    file = directory / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise MergeInputError(f"{file}: cannot read the model config ({error})") from error


def _output_dtypes(inputs: MergeInputs, recipe: MergeRecipe) -> dict[str, torch.dtype]:
    wanted = getattr(torch, recipe.dtype) if recipe.dtype else None
    return {
        name: wanted if wanted is not None and info.dtype.is_floating_point else info.dtype
        for name, info in inputs.base.tensors.items()
    }


def _output_layout(inputs: MergeInputs, recipe: MergeRecipe) -> dict[str, TensorInfo]:
    dtypes = _output_dtypes(inputs, recipe)
    return {
        name: TensorInfo(inputs.base.tensors[name].shape, dtypes[name])
        for unit in inputs.units
        if unit.action != "drop"
        for name in unit.names
    }


def _write_metadata(
    staging: Path,
    recipe: MergeRecipe,
    inputs: MergeInputs,
    hashes: dict[Path, Future[str]],
    card_extra: str,
    license: str | None,
) -> None:
    """config.json for plain HubertModel, the base's preprocessing, and the model card."""
    from culturemert.model import hubert_config_from_dict, read_preprocessing

    config = hubert_config_from_dict(inputs.base_config, where=str(inputs.base.directory)).to_dict()
    preprocessing = read_preprocessing(inputs.base.directory, default_rate=config["sample_rate"])
    config["architectures"] = ["HubertModel"]
    config["sample_rate"] = preprocessing.sample_rate
    layout = _output_layout(inputs, recipe).values()
    floating = [info.dtype for info in layout if info.dtype.is_floating_point]
    config["dtype"] = str(floating[0]).removeprefix("torch.")
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    base_preprocessor = inputs.base.directory / "preprocessor_config.json"
    if base_preprocessor.is_file():
        shutil.copyfile(base_preprocessor, staging / "preprocessor_config.json")
    else:
        text = json.dumps(preprocessing.to_hf_dict(), indent=2) + "\n"
        (staging / "preprocessor_config.json").write_text(text)
    roles = [("base", inputs.base)] + [(f"models[{i}]", m) for i, m in enumerate(inputs.models)]
    rows = [
        (role, source.directory, file.name, hashes[file].result())
        for role, source in roles
        for file in source.files
    ]
    write_card(staging, merge_card(recipe, rows, license=license, extra=card_extra))
