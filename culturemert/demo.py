"""The demo: the CultureMERT experiment in miniature, the shipped pipeline run end to end.

A tiny encoder pre-trained on Western-like synthetic music, adapted to four other synthetic
traditions (together, and each alone), merged, probed on every tradition's tags, and compared
in one HTML report; offline, on a CPU, cached so that a re-run costs seconds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from culturemert.pipeline import Pipeline, StepOutcome, load_pipeline, run_pipeline
from culturemert.pipeline.steps import STEP_KINDS

#: The step whose product is the report page.
REPORT_STEP = "report"

#: ``--scale``: overrides of the shipped recipe. ``full`` narrows both parts of every claim's
#: interval: more pre-training replicas (seeds) and more test clips (tracks).
SCALES: dict[str, tuple[str, ...]] = {
    "small": (),
    "full": ("replicates=5", "steps.corpus.clips_per_tradition=300"),
}


def demo_recipe() -> Path:
    """The shipped demo pipeline (package data, so it is found after ``pip install``)."""
    return Path(str(resources.files("culturemert").joinpath("recipes", "demo.yaml")))


def load_demo(seed: int | None = None, overrides: Sequence[str] = ()) -> Pipeline:
    """The demo pipeline, with another seed and ``KEY=VALUE`` overrides if given."""
    pipeline = load_pipeline(demo_recipe(), set(STEP_KINDS), overrides)
    return pipeline if seed is None else dataclasses.replace(pipeline, seed=seed)


def run_demo(
    out: str | os.PathLike,
    *,
    seed: int | None = None,
    force: Iterable[str] = (),
    jobs: int | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> tuple[list[StepOutcome], Path]:
    """Run (or bring up to date) the demo in ``out``; the step outcomes and the HTML report."""
    pipeline = load_demo(seed, overrides)
    outcomes = run_pipeline(pipeline, out, STEP_KINDS, force=force, jobs=jobs, progress=progress)
    report = next(outcome.product for outcome in outcomes if outcome.name == REPORT_STEP)
    return outcomes, report
