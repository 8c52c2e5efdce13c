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
replicates: 2
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
    replicate: true
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
  eval-handcrafted: {kind: evaluate, encoder: "features:mfcc", name: mfcc, tasks: *tasks,
                     protocol: {window_seconds: null, selection: {kinds: [linear],
                                learning_rates: [1.0e-2], seeds: 2, probe: {max_epochs: 3}}}}
  report:
    kind: report
    gather: true
    title: Reduced
    results: ["@eval-base", "@eval-makam", "@eval-merged", "@eval-handcrafted"]
    sweeps: ["@merged"]
    limits: [Tiny models.]
    claims:
      - {name: makam CPT improves makam, model: makam, reference: base, tasks: [synth-makam]}
      - {name: base beats MFCC, model: base, reference: mfcc, tasks: [synth-western, synth-makam],
         metrics: [roc_auc, map]}
      - {name: merge keeps makam, model: merged, reference: makam, tasks: [synth-makam],
         margin: 0.02}
"""


def test_reduced_pipeline_end_to_end(tmp_path):
    """Every kind of step on seconds of audio, in two replicas: the report holds every table and
    plot, its numbers follow from the results files (pooled over replicas), the claims from the
    saved test predictions, the merge is task arithmetic at the chosen λ, a re-run executes
    nothing, two jobs give the same bytes and two threads the same verdicts."""
    import base64
    import csv
    import json
    import re

    import yaml
    from safetensors.torch import load_file
    from sklearn.metrics import roc_auc_score

    from culturemert.evaluate.results import load_predictions
    from culturemert.pipeline.steps import STEP_KINDS

    raw = yaml.safe_load(REDUCED)
    pipeline = pipeline_from_dict(raw, set(STEP_KINDS))
    outcomes = run_pipeline(pipeline, tmp_path, STEP_KINDS, progress=False, log=lambda m: None)
    product = {o.name: o.product for o in outcomes}
    assert product["base.1"] == tmp_path / "base.1" / "stages" / "0-western"
    assert product["only-makam.2"].name == "1-full"

    page = product["report"].read_text()
    for heading in (
        "Claims and verdicts",
        "ROC-AUC / mAP (%)",
        "Micro-F1 / Macro-F1 (%)",
        "Cross-cultural transfer matrix",
        "ROC-AUC change from base (points)",
        "λ sweep of the merge (validation)",
        "What this does not show",
    ):
        assert heading in page
    markdown = (tmp_path / "report" / "report.md").read_text()
    for heading in ("Claims and verdicts", "ROC-AUC / mAP (%)", "λ sweep", "does not show"):
        assert heading in markdown
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # Claims, ROC-AUC and mAP heatmaps, a per-family chart per task, change heatmap, sweep.
    assert len(images) == 1 + 2 + 2 + 1 + 1
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)

    # The change table: makam CPT minus base, in ROC-AUC points, the mean over the replicas.
    def roc_auc(step: str) -> float:
        results = json.loads(product[step].read_text())
        return results["tasks"]["synth-makam"]["metrics"]["roc_auc"]["mean"]

    expected = 50 * sum(roc_auc(f"eval-makam.{r}") - roc_auc(f"eval-base.{r}") for r in (1, 2))
    table = markdown.split("### ROC-AUC change from base (points)")[1].strip().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    row = next(line for line in table if line.startswith("| makam |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[header.index("synth-makam")] == f"{expected:+.1f}"

    # claims.json: each claim's paired estimate, from the predictions, scored by scikit-learn.
    claims = {c["name"]: c for c in json.loads((tmp_path / "report" / "claims.json").read_text())}
    assert set(claims) == {"makam CPT improves makam", "base beats MFCC", "merge keeps makam"}
    differences = []
    for r in (1, 2):
        a, b = (
            load_predictions(product[f"eval-{m}.{r}"].parent / "predictions.npz")["synth-makam"]
            for m in ("makam", "base")
        )
        assert a.track_ids == b.track_ids
        both = (a.labels.min(0) == 0) & (a.labels.max(0) == 1)  # tags the averages keep
        differences.append(
            roc_auc_score(a.labels[:, both], a.scores[:, both])
            - roc_auc_score(b.labels[:, both], b.scores[:, both])
        )
    claim = claims["makam CPT improves makam"]
    assert claim["per_replica"] == pytest.approx([100 * d for d in differences], abs=0.006)
    low, high = claim["interval"]
    assert low <= claim["estimate"] <= high and claim["replicas"] == 2
    assert claim["verdict"] in ("supported", "contradicted", "inconclusive")

    # The kept merge is base + λ·Σ(model − base) at the λ that scored best on validation.
    with open(product["merged.1"] / "sweep.csv", newline="") as handle:
        sweep = list(csv.DictReader(handle))
    best = max(sweep, key=lambda r: float(r["validation ROC-AUC"]))
    assert best["best"] == "1"
    lam = float(best["lambda"])
    tensors = {
        name: load_file(product[step] / "model.safetensors")
        for name, step in (
            ("base", "base.1"),
            ("makam", "only-makam.1"),
            ("hindustani", "only-hindustani.1"),
            ("merged", "merged.1"),
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
    for file in [*(tmp_path / "only-makam.2").rglob("*.safetensors"), product["merged.2"]]:
        file = file / "model.safetensors" if file.is_dir() else file
        assert (parallel / file.relative_to(tmp_path)).read_bytes() == file.read_bytes(), file
    for step in ("eval-base.1", "eval-merged.2"):
        scores = [
            json.loads((run / step / "results.json").read_text()) for run in (tmp_path, parallel)
        ]
        assert scores[0]["tasks"] == scores[1]["tasks"]
    assert (parallel / "report" / "claims.json").read_bytes() == (
        tmp_path / "report" / "claims.json"
    ).read_bytes()

    # Two torch threads: other float sums, so other weights; the same verdicts.
    threaded = tmp_path / "threads-2"
    pipeline = pipeline_from_dict({**raw, "threads": 2}, set(STEP_KINDS))
    run_pipeline(pipeline, threaded, STEP_KINDS, progress=False, log=lambda m: None)
    verdicts = {
        c["name"]: c["verdict"]
        for c in json.loads((threaded / "report" / "claims.json").read_text())
    }
    assert verdicts == {name: c["verdict"] for name, c in claims.items()}


def replicated(replicates: int = 2) -> dict:
    """a → b → c replicated from b; d reads c and a; e gathers every c (and a, run once)."""
    return {
        "seed": 3,
        "replicates": replicates,
        "steps": {
            "a": {"kind": "concat", "text": "a"},
            "b": {"kind": "concat", "text": "b", "replicate": True, "inputs": ["@a"]},
            "c": {"kind": "concat", "text": "c", "inputs": ["@b/value.txt"]},
            "d": {"kind": "concat", "text": "d", "inputs": ["@c", "@a"]},
            "e": {"kind": "concat", "text": "e", "gather": True, "inputs": ["@a", "@c"]},
        },
    }


def test_replicated_steps_run_once_per_replica_paired_along_their_chain(tmp_path, monkeypatch):
    seeds: list[int] = []
    original = runner._reproducible

    def recording(seed, threads):
        seeds.append(seed)
        return original(seed, threads)

    monkeypatch.setattr(runner, "_reproducible", recording)
    outcomes = run(replicated(), tmp_path)
    names = [o.name for o in outcomes]
    assert set(names) == {"a", "b.1", "b.2", "c.1", "c.2", "d.1", "d.2", "e"}
    product = {o.name: o.product for o in outcomes}
    assert product["d.2"].read_text() == "a+b+c+a+d"  # replica 2 read b.2 → c.2, and a once
    assert product["e"].read_text() == "a+a+b+c+a+b+c+e"  # a, then c.1 and c.2 in order
    assert len(set(seeds)) == len(names)  # every replica has a seed of its own
    # Replicas are outputs of their own: forcing the declared name redoes all of them.
    again = run(replicated(), tmp_path, force=["c"])
    ran = {o.name for o in again if o.status == "ran"}
    assert ran == {"c.1", "c.2", "d.1", "d.2", "e"}


def test_one_replicate_is_the_plain_pipeline(tmp_path):
    outcomes = run(replicated(1), tmp_path)
    assert [o.name for o in outcomes if o.name.startswith("b")] == ["b"]
    product = {o.name: o.product for o in outcomes}
    assert product["e"].read_text() == "a+a+b+c+e"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda raw: raw.update(replicates=0), "replicates must be a positive integer"),
        (lambda raw: raw["steps"]["b"].update(replicate="yes"), r"steps\.b\.replicate: expected"),
        (lambda raw: raw["steps"]["b"].update(gather=True), "cannot both replicate and gather"),
    ],
)
def test_bad_replication_fails_before_anything_runs(tmp_path, change, message):
    raw = replicated()
    change(raw)
    with pytest.raises(PipelineError, match=message):
        run(raw, tmp_path)
    assert CALLS == []
