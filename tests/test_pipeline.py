"""The pipeline runner: caching by inputs, forced re-runs, failures that leave no half output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from culturemert.cli import main
from culturemert.pipeline import runner
from culturemert.pipeline.runner import StepError, StepKind, run_pipeline
from culturemert.pipeline.spec import PipelineError, pipeline_from_dict

CALLS: list[str] = []


@dataclass
class Concat:
    text: str
    inputs: list[str] = field(default_factory=list)


def run_concat(settings: Concat, context) -> Path:
    """Writes its text after its inputs' texts: the output shows exactly what it read."""
    CALLS.append(context.name)
    parts = [Path(path).read_text() for path in settings.inputs] + [settings.text]
    (context.out / "value.txt").write_text("+".join(parts))
    return context.out / "value.txt"


@dataclass
class Broken:
    message: str
    inputs: list[str] = field(default_factory=list)


def run_broken(settings: Broken, context) -> Path:
    CALLS.append(context.name)
    (context.out / "half.txt").write_text("half")
    raise RuntimeError(settings.message)


KINDS = {"concat": StepKind(Concat, run_concat), "broken": StepKind(Broken, run_broken)}


def diamond(b_text: str = "b") -> dict:
    """a → b → c and a → d; c also reads a's folder by relative path."""
    return {
        "seed": 3,
        "steps": {
            "a": {"kind": "concat", "text": "a"},
            "b": {"kind": "concat", "text": b_text, "inputs": ["@a"]},
            "c": {"kind": "concat", "text": "c", "inputs": ["@b", "@a/value.txt"]},
            "d": {"kind": "concat", "text": "d", "inputs": ["@a"]},
        },
    }


def run(raw: dict, out: Path, **options):
    CALLS.clear()
    pipeline = pipeline_from_dict(raw, set(KINDS))
    return run_pipeline(pipeline, out, KINDS, progress=False, log=lambda message: None, **options)


def test_rerun_executes_nothing_and_a_change_redoes_only_its_dependants(tmp_path):
    outcomes = run(diamond(), tmp_path)
    assert sorted(CALLS) == ["a", "b", "c", "d"]
    assert (tmp_path / "c" / "value.txt").read_text() == "a+b+a+c"
    assert [o.product for o in outcomes if o.name == "d"] == [tmp_path / "d" / "value.txt"]

    outcomes = run(diamond(), tmp_path)
    assert CALLS == []
    assert {o.status for o in outcomes} == {"cached"}

    run(diamond(b_text="B"), tmp_path)
    assert sorted(CALLS) == ["b", "c"]
    assert (tmp_path / "c" / "value.txt").read_text() == "a+B+a+c"
    assert (tmp_path / "d" / "value.txt").read_text() == "a+d"


def test_force_redoes_a_step_and_its_dependants(tmp_path):
    run(diamond(), tmp_path)
    run(diamond(), tmp_path, force=["b"])
    assert sorted(CALLS) == ["b", "c"]
    run(diamond(), tmp_path, force=["a"])
    assert sorted(CALLS) == ["a", "b", "c", "d"]
    with pytest.raises(PipelineError, match="no such step"):
        run(diamond(), tmp_path, force=["zz"])


def test_seed_and_library_version_are_inputs(tmp_path, monkeypatch):
    run(diamond(), tmp_path)
    run({**diamond(), "seed": 4}, tmp_path)
    assert sorted(CALLS) == ["a", "b", "c", "d"]
    monkeypatch.setattr(runner, "__version__", "999")
    run({**diamond(), "seed": 4}, tmp_path)
    assert sorted(CALLS) == ["a", "b", "c", "d"]


def test_a_failing_step_is_named_and_leaves_no_half_output(tmp_path):
    run(diamond(), tmp_path)
    raw = diamond()
    raw["steps"]["b"] = {"kind": "broken", "message": "out of tune"}
    with pytest.raises(StepError, match=r"step 'b' \(broken\) failed: RuntimeError: out of tune"):
        run(raw, tmp_path)
    assert CALLS == ["b"]  # a was cached; nothing after b ran
    # The old, complete output of b is still there; no staging folder is left behind.
    assert (tmp_path / "b" / "value.txt").read_text() == "a+b"
    assert not (tmp_path / "b" / "half.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "d", "logs"]
    assert "out of tune" in (tmp_path / "logs" / "b.traceback.txt").read_text()
    run(diamond(), tmp_path)  # the old settings again: b's output is still valid
    assert CALLS == []


def test_parallel_steps_give_the_outputs_of_a_sequential_run(tmp_path):
    run(diamond(), tmp_path / "one", jobs=1)
    outcomes = run(diamond(), tmp_path / "two", jobs=2)
    assert [o.name for o in outcomes] == [o.name for o in run(diamond(), tmp_path / "one")]
    assert {o.status for o in outcomes} == {"ran"}
    for name in "abcd":
        assert (tmp_path / "two" / name / "value.txt").read_text() == (
            tmp_path / "one" / name / "value.txt"
        ).read_text()


def test_a_failing_parallel_step_is_named_and_independent_steps_keep_their_outputs(tmp_path):
    raw = diamond()
    raw["steps"]["b"] = {"kind": "broken", "message": "out of tune", "inputs": ["@a"]}
    with pytest.raises(StepError, match=r"step 'b' \(broken\) failed: RuntimeError: out of tune"):
        run(raw, tmp_path, jobs=2)
    assert (tmp_path / "d" / "value.txt").read_text() == "a+d"  # started beside b, let finish
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d", "logs"]


def test_cli_names_the_failing_step(tmp_path, capsys):
    pipeline = tmp_path / "broken.yaml"
    pipeline.write_text("steps:\n  corpus:\n    kind: synth\n    traditions: [nowhere]\n")
    assert main(["run", str(pipeline), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "step 'corpus' (synth) failed" in error and "nowhere" in error
    assert not (tmp_path / "run" / "corpus").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["b"].update(inputs=["@zz"]), r"steps\.b: refers to @zz"),
        (lambda s: s["a"].update(inputs=["@c"]), "cycle"),
        (lambda s: s["a"].update(kind="bake"), r"steps\.a\.kind: unknown kind 'bake'"),
        (lambda s: s["d"].update(colour="red"), r"steps\.d\.colour: unknown field"),
        (lambda s: s["d"].pop("text"), r"steps\.d\.text: required field is missing"),
    ],
)
def test_bad_pipelines_fail_before_anything_runs(tmp_path, change, message):
    raw = diamond()
    change(raw["steps"])
    with pytest.raises(PipelineError, match=message):
        run(raw, tmp_path)
    assert CALLS == []
    assert not tmp_path.joinpath("a").exists()


REDUCED = """
seed: 1
threads: 1
x-tasks: &tasks
  synth-western: "@corpus/western.jsonl"
  synth-makam: "@corpus/makam.jsonl"
x-protocol: &protocol {window_seconds: null, selection: {kinds: [linear], learning_rates: [1.0e-2],
                       seeds: 2, layers: [1], probe: {max_epochs: 3, patience: 2}}}
x-data: &data {manifests: ["@corpus/train.jsonl"], replay_manifest: "@corpus/train-western.jsonl",
               num_workers: 0}
x-stage: &stage {crop_seconds: 1.0, batch_seconds: 2.0, steps: 1,
                 schedule: {peak_lr: 1.0e-3}}
x-pretrain: &pretrain {kind: pretrain, init: "@base", targets: "@teacher", data: *data,
                       objective: {cqt_bins: 14}}
steps:
  corpus: {kind: synth, traditions: [western, makam, hindustani], clips_per_tradition: 10,
           clip_seconds: 2.0, splits: [0.4, 0.3, 0.3]}
  teacher: {kind: targets, manifest: "@corpus/train.jsonl", fit_on: "@corpus/train-western.jsonl",
            codebooks: ["mfcc:4"], max_frames: 2000}
  init:
    kind: encoder
    architecture: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
                   intermediate_size: 32, conv_dim: [8, 8, 8, 8, 8, 8, 8],
                   num_conv_pos_embeddings: 8, num_conv_pos_embedding_groups: 2}
  base:
    <<: *pretrain
    init: "@init"
    stages: [{<<: *stage, name: western, trainable: [all], mixture: {traditions: [western]}}]
  only-makam:
    <<: *pretrain
    stages:
      - {<<: *stage, name: heads-cnn, trainable: [heads, cnn],
         mixture: {traditions: [makam], replay: 0.5}}
      - {<<: *stage, name: full, trainable: [all], mixture: {traditions: [makam]}}
  only-hindustani:
    <<: *pretrain
    stages: [{<<: *stage, name: full, trainable: [all], mixture: {traditions: [hindustani]}}]
  merged: {kind: merge, base: "@base", models: ["@only-makam", "@only-hindustani"],
           lambdas: [0.5, 1.0], validate_on: *tasks, protocol: *protocol}
  eval-base: {kind: evaluate, encoder: "@base", name: base, tasks: *tasks, protocol: *protocol}
  eval-makam: {kind: evaluate, encoder: "@only-makam", name: makam, tasks: *tasks,
               protocol: *protocol}
  eval-merged: {kind: evaluate, encoder: "@merged", name: merged, tasks: *tasks,
                protocol: *protocol}
  report: {kind: report, title: Reduced, results: ["@eval-base", "@eval-makam", "@eval-merged"],
           sweep: "@merged", limits: [Tiny models.]}
"""


def test_reduced_pipeline_end_to_end(tmp_path):
    """Every kind of step on seconds of audio: the report holds every table and plot, the
    numbers in it follow from the results files, the merge is task arithmetic at the chosen λ,
    and a re-run executes nothing."""
    import base64
    import csv
    import json
    import re

    import yaml
    from safetensors.torch import load_file

    from culturemert.pipeline.steps import STEP_KINDS

    raw = yaml.safe_load(REDUCED)
    pipeline = pipeline_from_dict(raw, set(STEP_KINDS))
    outcomes = run_pipeline(pipeline, tmp_path, STEP_KINDS, progress=False, log=lambda m: None)
    product = {o.name: o.product for o in outcomes}
    assert product["base"] == tmp_path / "base" / "stages" / "0-western"
    assert product["only-makam"].name == "1-full"

    page = product["report"].read_text()
    for heading in (
        "ROC-AUC / mAP (%)",
        "Micro-F1 / Macro-F1 (%)",
        "Cross-cultural transfer matrix",
        "ROC-AUC change from base (points)",
        "λ sweep of the merge (validation)",
        "What this does not show",
    ):
        assert heading in page
    markdown = (tmp_path / "report" / "report.md").read_text()
    for heading in ("ROC-AUC / mAP (%)", "Micro-F1 / Macro-F1 (%)", "λ sweep", "does not show"):
        assert heading in markdown
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # ROC-AUC and mAP heatmaps, one per-family chart per task, the change heatmap, the sweep.
    assert len(images) == 2 + 2 + 1 + 1
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)

    # The change table: makam CPT minus base, in ROC-AUC points, from the results files.
    results = {name: json.loads(product[f"eval-{name}"].read_text()) for name in ("base", "makam")}
    expected = 100 * (
        results["makam"]["tasks"]["synth-makam"]["metrics"]["roc_auc"]["mean"]
        - results["base"]["tasks"]["synth-makam"]["metrics"]["roc_auc"]["mean"]
    )
    table = markdown.split("### ROC-AUC change from base (points)")[1].strip().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    row = next(line for line in table if line.startswith("| makam |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[header.index("synth-makam")] == f"{expected:+.1f}"

    # The kept merge is base + λ·Σ(model − base) at the λ that scored best on validation.
    with open(product["merged"] / "sweep.csv", newline="") as handle:
        sweep = list(csv.DictReader(handle))
    best = max(sweep, key=lambda r: float(r["validation ROC-AUC"]))
    assert best["best"] == "1"
    lam = float(best["lambda"])
    tensors = {
        name: load_file(path / "model.safetensors")
        for name, path in (
            ("base", product["base"]),
            ("makam", product["only-makam"]),
            ("hindustani", product["only-hindustani"]),
            ("merged", product["merged"]),
        )
    }
    key = "encoder.layers.1.feed_forward.output_dense.weight"
    base = tensors["base"][key]
    reference = base + lam * ((tensors["makam"][key] - base) + (tensors["hindustani"][key] - base))
    assert torch.allclose(tensors["merged"][key], reference, atol=1e-6)

    CALLS.clear()
    again = run_pipeline(pipeline, tmp_path, STEP_KINDS, progress=False, log=lambda m: None)
    assert {o.status for o in again} == {"cached"}

    # Two steps at a time, each in its own process: the same bytes.
    parallel = tmp_path / "parallel"
    run_pipeline(pipeline, parallel, STEP_KINDS, jobs=2, progress=False, log=lambda m: None)
    for file in [*(tmp_path / "only-makam").rglob("*.safetensors"), product["merged"]]:
        file = file / "model.safetensors" if file.is_dir() else file
        assert (parallel / file.relative_to(tmp_path)).read_bytes() == file.read_bytes(), file
    for step in ("eval-base", "eval-merged"):
        scores = [
            json.loads((run / step / "results.json").read_text()) for run in (tmp_path, parallel)
        ]
        assert scores[0]["tasks"] == scores[1]["tasks"]
