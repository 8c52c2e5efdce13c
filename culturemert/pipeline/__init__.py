"""Pipelines: declared steps (synth, targets, pre-training, merge, evaluation, report) whose
outputs are cached by their inputs, so a re-run redoes only what changed."""

from culturemert.pipeline.runner import (
    StepContext,
    StepError,
    StepKind,
    StepOutcome,
    run_pipeline,
    step_keys,
)
from culturemert.pipeline.spec import (
    Pipeline,
    PipelineError,
    StepSpec,
    load_pipeline,
    pipeline_from_dict,
)

__all__ = [
    "Pipeline",
    "PipelineError",
    "StepContext",
    "StepError",
    "StepKind",
    "StepOutcome",
    "StepSpec",
    "load_pipeline",
    "pipeline_from_dict",
    "run_pipeline",
    "step_keys",
]
