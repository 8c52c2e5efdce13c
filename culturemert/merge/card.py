"""The model card (README.md) of a merged encoder: what was merged, from what, with what."""

from __future__ import annotations

from pathlib import Path

import safetensors
import torch

from culturemert import __version__
from culturemert.merge.recipe import MergeRecipe, recipe_yaml

_DESCRIPTIONS = {
    "task_arithmetic": "task arithmetic: θ = θ_base + Σ_i λ_i·w_i·(θ_i − θ_base)",
    "ties": "TIES: trim each task vector to its top-{density:g} magnitudes ({scope} scope), "
    "elect a sign per entry by summed mass, average the agreeing entries, scale by λ",
    "dare": "DARE: drop task-vector entries with probability {drop:g}, rescale by 1/(1−p), "
    "combine by {combine}",
    "linear": "linear (model soup): θ = Σ_i w_i·θ_i / Σ_i w_i",
}


def model_card(recipe: MergeRecipe, inputs: list[tuple[str, Path, str, str]], extra: str) -> str:
    """Markdown card; ``inputs`` rows are (role, directory, weight file name, sha256)."""
    description = _DESCRIPTIONS[recipe.method].format(**recipe.to_dict())
    rows = "\n".join(
        f"| {role} | `{directory}` | `{file}` | `{digest}` |"
        for role, directory, file, digest in inputs
    )
    return f"""---
library_name: transformers
tags: [audio, music, merge, culturemert]
---

# Merged encoder

Made by `culturemert merge` ({description}). Weight-normed convolutions were merged
{"in effective-weight space (g·v/‖v‖, split back into g and v)" if recipe.weight_norm == "effective" else "as raw g and v tensors"};
non-encoder tensors: {recipe.non_encoder}. Loads with `transformers.HubertModel.from_pretrained`.

## Recipe

```yaml
{recipe_yaml(recipe).rstrip()}
```

## Inputs

| role | source | file | sha256 |
| --- | --- | --- | --- |
{rows}

## Software

culturemert {__version__}, torch {torch.__version__}, safetensors {safetensors.__version__}
{extra}"""
