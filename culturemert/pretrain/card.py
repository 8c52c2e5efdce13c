"""What a pre-training stage's card says: the recipe, the data per tradition, the steps, the
teacher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import yaml

from culturemert.model.card import EncoderCard, lineage
from culturemert.pretrain.data import Source
from culturemert.pretrain.recipe import Recipe, recipe_to_dict


def stage_card(
    recipe: Recipe, stage_sources: Sequence[Sequence[Source]], *, updates: int | None = None
) -> EncoderCard:
    """The card of the encoder exported after stage ``len(stage_sources) - 1``, or after
    ``updates`` of that stage's updates (a snapshot).

    ``stage_sources`` holds the data sources of that stage and of every stage before it, as
    the run planned them. The licence is the card's of ``recipe.init`` (none is known for a
    training checkpoint of ours: the card says so).
    """
    done = recipe.stages[: len(stage_sources)]
    last = len(done) - 1
    if updates is not None:
        done = [*done[:-1], replace(done[-1], steps=updates)]
    steps = sum(stage.steps for stage in done)
    training = [
        "| stage | trainable | updates | audio per update (s) | audio seen (h) | peak LR |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ] + [
        f"| {i}-{stage.name} | {', '.join(stage.trainable)} | {stage.steps} | "
        f"{stage.batch_seconds:g} | {stage.steps * stage.batch_seconds / 3600:.4g} | "
        f"{stage.schedule.peak_lr:g} |"
        for i, stage in enumerate(done)
    ]
    data = [
        "| stage | tradition | hours available | tracks | share of crops |",
        "| --- | --- | ---: | ---: | ---: |",
    ] + [
        f"| {i}-{stage.name} | {source.name} | "
        f"{sum(t.duration or 0.0 for t in source.tracks) / 3600:.4g} | {len(source.tracks)} | "
        f"{source.probability:.0%} |"
        for i, (stage, sources) in enumerate(zip(done, stage_sources, strict=True))
        for source in sources
    ]
    recipe_text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False).rstrip()
    return EncoderCard(
        title=f"Continually pre-trained encoder: stage {last}-{done[-1].name}"
        + (
            ""
            if updates is None
            else f" after {updates} of its {recipe.stages[last].steps} updates"
        ),
        summary=(
            f"Made by `culturemert pretrain` from `{recipe.init}` with MERT's masked-prediction "
            f"objective: {steps} updates over stages 0–{last} of the recipe below, learning "
            f"rate re-warmed and re-decayed per stage."
        ),
        lineage=lineage(recipe.init),
        tags=("continual-pretraining", "mert"),
        sections=(
            ("Training", "\n".join(training)),
            ("Data", "\n".join(data)),
            (
                "Teacher",
                f"Targets `{recipe.teacher.targets}`, teacher hash `{recipe.teacher.hash}`.",
            ),
            ("Recipe", f"```yaml\n{recipe_text}\n```"),
        ),
    )
