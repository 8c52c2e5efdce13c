"""What a merged encoder's card says: what was merged, from what, with what settings."""

from __future__ import annotations

from pathlib import Path

from culturemert.merge.recipe import MergeRecipe, recipe_yaml
from culturemert.model.card import EncoderCard, lineage

_DESCRIPTIONS = {
    "task_arithmetic": "task arithmetic: θ = θ_base + Σ_i λ_i·w_i·(θ_i − θ_base)",
    "ties": "TIES: trim each task vector to its top-{density:g} magnitudes ({scope} scope), "
    "elect a sign per entry by summed mass, average the agreeing entries, scale by λ",
    "dare": "DARE: drop task-vector entries with probability {drop:g}, rescale by 1/(1−p), "
    "combine by {combine}",
    "linear": "linear (model soup): θ = Σ_i w_i·θ_i / Σ_i w_i",
}


def merge_card(
    recipe: MergeRecipe,
    inputs: list[tuple[str, Path, str, str]],
    *,
    license: str | None = None,
    extra: str = "",
) -> EncoderCard:
    """The card of a merge; ``inputs`` rows are (role, directory, weight file name, sha256).

    ``base_model`` is the recipe's base (when a hub id) and the licence the inputs' cards name,
    as for the released CultureMERT-TA-95M; ``extra`` Markdown ends the card's making.
    """
    description = _DESCRIPTIONS[recipe.method].format(**recipe.to_dict())
    weight_norm = (
        "in effective-weight space (g·v/‖v‖, split back into g and v)"
        if recipe.weight_norm == "effective"
        else "as raw g and v tensors"
    )
    rows = "\n".join(
        f"| {role} | `{directory}` | `{file}` | `{digest}` |"
        for role, directory, file, digest in inputs
    )
    summary = (
        f"Made by `culturemert merge` ({description}). Weight-normed convolutions were merged "
        f"{weight_norm}; non-encoder tensors: {recipe.non_encoder}."
    )
    sections = [
        ("Recipe", f"```yaml\n{recipe_yaml(recipe).rstrip()}\n```"),
        (
            "Inputs",
            f"| role | source | file | sha256 |\n| --- | --- | --- | --- |\n{rows}",
        ),
    ]
    if extra.strip():
        sections[-1] = ("Inputs", f"{sections[-1][1]}\n\n{extra.strip()}")
    return EncoderCard(
        title="Merged encoder",
        summary=summary,
        lineage=lineage(recipe.base, inputs=recipe.models, license=license),
        tags=("merge", recipe.method),
        sections=tuple(sections),
    )
