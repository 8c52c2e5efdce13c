"""The kinds of pipeline step: thin adapters from a step's settings to the library's functions.

Each settings dataclass is what a step of that kind accepts in the pipeline file; paths in it
are usually ``@step`` references. Each function writes into ``context.out`` and returns the
step's main product.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from culturemert.pipeline.report import ReportSettings, run_report
from culturemert.pipeline.runner import StepContext, StepKind


@dataclass
class SynthSettings:
    """A synthetic corpus; besides the synth manifests, ``train.jsonl`` and
    ``train-<tradition>.jsonl`` list the training split (what pre-training may hear)."""

    traditions: list[str] = field(
        default_factory=lambda: ["western", "makam", "hindustani", "carnatic", "greek-folk"]
    )
    clips_per_tradition: int = 20
    clip_seconds: float = 5.0
    splits: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    audio_format: str = "flac"


def run_synth(settings: SynthSettings, context: StepContext) -> Path:
    """Write the corpus and its training-split manifests; the product is the corpus folder."""
    from culturemert.manifest import read_manifest, write_manifest
    from culturemert.synth import write_corpus

    manifests = write_corpus(
        context.out,
        settings.traditions,
        clips_per_tradition=settings.clips_per_tradition,
        seed=context.seed,
        clip_seconds=settings.clip_seconds,
        splits=settings.splits,
        audio_format=settings.audio_format,
        progress=context.progress,
    )
    train = [t for t in read_manifest(manifests["all"]) if t.split == "train"]
    write_manifest(context.out / "train.jsonl", train)
    for tradition in settings.traditions:
        chosen = [t for t in train if t.tradition == tradition]
        write_manifest(context.out / f"train-{tradition}.jsonl", chosen)
    return context.out


@dataclass
class TargetsSettings:
    """A k-means teacher fitted on ``fit_on``'s audio, and its codes for every track of
    ``manifest``."""

    manifest: str
    fit_on: str
    codebooks: list[str]
    max_frames: int = 20_000


def run_targets(settings: TargetsSettings, context: StepContext) -> Path:
    """Fit the teacher, label the manifest; the product is the target folder."""
    from culturemert.manifest import read_manifest
    from culturemert.teachers.targets import compute_targets, fit_kmeans_on_tracks

    fit_on = Path(settings.fit_on)
    teacher = fit_kmeans_on_tracks(
        read_manifest(fit_on),
        fit_on.parent,
        settings.codebooks,
        max_frames=settings.max_frames,
        seed=context.seed,
        progress=context.progress,
    )
    teacher.save(context.out / "teacher.safetensors")
    manifest = Path(settings.manifest)
    out = context.out / "targets"
    summary = compute_targets(
        teacher, read_manifest(manifest), manifest.parent, out, progress=context.progress
    )
    if summary.failed:
        track, reason = next(iter(summary.failed.items()))
        raise ValueError(f"{len(summary.failed)} tracks could not be read, e.g. {track}: {reason}")
    return out


@dataclass
class EncoderSettings:
    """A randomly initialised encoder of MERT's layout (``mert_config_dict`` arguments)."""

    architecture: dict[str, Any] = field(default_factory=dict)


def run_encoder(settings: EncoderSettings, context: StepContext) -> Path:
    """Build and save the seeded encoder; the product is its Hugging Face-layout folder."""
    import torch
    from transformers import HubertModel

    from culturemert.model import hubert_config_from_dict, mert_config_dict, save_encoder

    architecture = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in settings.architecture.items()
    }
    torch.manual_seed(context.seed)
    model = HubertModel(hubert_config_from_dict(mert_config_dict(**architecture)))
    return save_encoder(model, context.out / "encoder")


@dataclass
class PretrainSettings:
    """A pre-training recipe (see ``culturemert pretrain``) whose teacher comes from a targets
    step: its hash and codebook sizes are read from the target folder."""

    init: str
    targets: str
    data: dict[str, Any]
    stages: list[dict[str, Any]]
    objective: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=lambda: {"accelerator": "cpu"})
    checkpoint_every: int = 1_000_000  # the end of each stage is always checkpointed
    log_every: int = 1


def run_pretrain(settings: PretrainSettings, context: StepContext) -> Path:
    """Train every stage; the product is the last stage's exported encoder."""
    from culturemert.pretrain.loop import train
    from culturemert.pretrain.recipe import recipe_from_dict
    from culturemert.teachers.targets import targets_teacher

    teacher_hash, codebook_sizes = targets_teacher(settings.targets)
    raw = {
        "init": settings.init,
        "teacher": {"targets": settings.targets, "hash": teacher_hash},
        "objective": {"codebook_sizes": codebook_sizes, **settings.objective},
        "data": settings.data,
        "stages": settings.stages,
        "engine": settings.engine,
        "seed": context.seed,
        "checkpoint_every": settings.checkpoint_every,
        "log_every": settings.log_every,
    }
    recipe = recipe_from_dict(raw, where=f"steps.{context.name}")
    exported = train(recipe, context.out, progress=context.progress)
    return exported[-1]


def evaluation_config(protocol: dict[str, Any], context: StepContext | None = None):
    """The :class:`EvaluationConfig` of a step's ``protocol`` (an evaluation config mapping, as
    ``culturemert evaluate --config`` reads), its features cached in the run folder."""
    from culturemert.evaluate.settings import evaluation_config as from_dict

    config = from_dict(protocol, where="protocol")
    if context is None:
        return config
    return replace(config, cache_dir=str(context.cache / "features"))


def manifest_datasets(tasks: dict[str, str]) -> list:
    """One dataset per task (task name → a manifest, read by the generic adapter)."""
    from culturemert.evaluate.datasets import build_dataset

    return [
        replace(build_dataset("generic", manifest), name=task) for task, manifest in tasks.items()
    ]


@dataclass
class MergeSettings:
    """Merge ``models`` onto ``base`` at every λ of ``lambdas``; keep the one scoring best on
    the tasks' validation splits."""

    base: str
    models: list[str]
    lambdas: list[float]
    validate_on: dict[str, str]  # task name → manifest
    method: str = "task_arithmetic"
    protocol: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # other merge recipe keys

    def __post_init__(self) -> None:
        evaluation_config(self.protocol)


def run_merge(settings: MergeSettings, context: StepContext) -> Path:
    """Run the λ sweep; the product is the chosen merge (with sweep.csv and sweep.png)."""
    from culturemert.merge import recipe_from_dict, sweep_lambda

    recipe = recipe_from_dict(
        {
            "base": settings.base,
            "models": settings.models,
            "method": settings.method,
            **settings.options,
        },
        where=f"steps.{context.name}",
    )
    from culturemert.evaluate.harness import validation_scorer

    config = evaluation_config(settings.protocol, context)
    scorer = validation_scorer(config, manifest_datasets(settings.validate_on))
    out = context.out / "encoder"
    sweep_lambda(
        recipe,
        settings.lambdas,
        scorer,
        out,
        metric="validation ROC-AUC",
        progress=context.progress,
    )
    return out


@dataclass
class EvaluateSettings:
    """Probe ``encoder`` on every task (task name → manifest); ``name`` labels it in reports.
    ``encoder: features:mfcc+chroma`` probes hand-made features instead, as a reference. The
    test predictions are kept beside the results (``predictions.npz``) for paired claims."""

    encoder: str
    name: str
    tasks: dict[str, str]
    protocol: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        evaluation_config(self.protocol)


def run_evaluate(settings: EvaluateSettings, context: StepContext) -> Path:
    """Evaluate; the product is the results file."""
    from culturemert.evaluate.harness import evaluate_encoder
    from culturemert.evaluate.results import save_predictions, save_results

    predictions: dict = {}
    results = evaluate_encoder(
        settings.encoder,
        manifest_datasets(settings.tasks),
        evaluation_config(settings.protocol, context),
        name=settings.name,
        progress=context.progress,
        predictions=predictions,
    )
    results["config"]["data_root"] = dict(settings.tasks)  # where each task's manifest is
    if context.replica is not None:
        results["replica"] = context.replica
    save_predictions(context.out / "predictions.npz", predictions)  # what claims resample
    return save_results(context.out / "results.json", results)


STEP_KINDS: dict[str, StepKind] = {
    "synth": StepKind(SynthSettings, run_synth),
    "targets": StepKind(TargetsSettings, run_targets),
    "encoder": StepKind(EncoderSettings, run_encoder),
    "pretrain": StepKind(PretrainSettings, run_pretrain),
    "merge": StepKind(MergeSettings, run_merge),
    "evaluate": StepKind(EvaluateSettings, run_evaluate),
    "report": StepKind(ReportSettings, run_report),
}
