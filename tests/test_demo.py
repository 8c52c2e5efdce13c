"""The demo: the shipped recipe declares the whole experiment; the command runs a pipeline,
prints its report and the report's path, and re-uses what it already computed."""

from __future__ import annotations

import json
from pathlib import Path

import culturemert
from culturemert import demo
from culturemert.cli import main
from culturemert.pipeline.runner import check_settings
from culturemert.pipeline.steps import STEP_KINDS

OTHERS = ["makam", "hindustani", "carnatic", "greek-folk"]


def test_shipped_recipe_declares_the_whole_experiment():
    recipe = demo.demo_recipe()
    assert recipe.is_file()
    assert recipe.parent == Path(culturemert.__file__).parent / "recipes"  # package data
    check_settings(demo.load_demo(), STEP_KINDS)
    pipeline = demo.load_demo(overrides=["replicates=1"])  # the declared steps, one of each
    steps = pipeline.by_name
    by_kind = {kind: [s for s in pipeline.steps if s.kind == kind] for kind in STEP_KINDS}

    assert steps["corpus"].config["traditions"] == ["western", *OTHERS]
    assert steps["teacher"].config["fit_on"] == "@corpus/train-western.jsonl"
    architecture = steps["init"].config["architecture"]
    assert architecture["hidden_size"] <= 128 and 2 <= architecture["num_hidden_layers"] <= 4

    # 1. The base: the k-means teacher's codes and the CQT target, Western-like music only.
    base = steps["base"].config
    assert base["init"] == "@init" and base["targets"] == "@teacher"
    assert base["objective"].get("use_cqt", True)
    assert [s["mixture"]["traditions"] for s in base["stages"]] == [["western"]]

    # 2. Two-stage CPT from the base: the other four together (with Western replay in stage 1)
    # and each alone.
    multi = steps["multi"].config["stages"]
    assert [s["mixture"]["traditions"] for s in multi] == [OTHERS, OTHERS]
    assert multi[0]["mixture"]["replay"] > 0 and multi[1]["trainable"] == ["all"]
    assert steps["multi"].config["data"]["replay_manifest"] == "@corpus/train-western.jsonl"
    singles = [f"only-{t}" for t in OTHERS]
    for tradition, name in zip(OTHERS, singles, strict=True):
        config = steps[name].config
        assert config["init"] == "@base"
        assert [s["mixture"]["traditions"] for s in config["stages"]] == [[tradition]] * 2

    # 3. Task arithmetic of the single-tradition encoders, λ swept on validation.
    merged = steps["merged"].config
    assert merged["method"] == "task_arithmetic" and merged["base"] == "@base"
    assert merged["models"] == [f"@{name}" for name in singles]
    assert len(merged["lambdas"]) >= 3
    assert set(merged["validate_on"]) == {f"synth-{t}" for t in ["western", *OTHERS]}

    # 4. Every encoder probed on every tradition's task; 5. one report over all of them.
    report = steps["report"].config
    curve_steps = {reference[1:] for reference in report["curve_results"]}
    table_evaluations = [s for s in by_kind["evaluate"] if s.name not in curve_steps]
    evaluated = {s.config["encoder"] for s in table_evaluations}
    assert evaluated == {
        "@init",
        "@base",
        "@multi",
        "@merged",
        *(f"@{n}" for n in singles),
        "features:mfcc+chroma",  # the hand-made reference
    }
    for step in table_evaluations:
        assert step.config["tasks"] == merged["validate_on"]
    assert set(report["results"]) == {f"@{s.name}" for s in table_evaluations}
    # Learning curves: base snapshots part-way, and each CPT after its first stage.
    snapshots = base["stages"][0]["snapshots"]
    assert {steps[name].config["encoder"] for name in curve_steps} == {
        *(f"@base/snapshots/0-western-{k}" for k in snapshots),
        *(f"@only-{t}/stages/0-heads-cnn" for t in OTHERS),
    }
    names_with_curves = {s.config["name"] for s in by_kind["evaluate"]}
    for curve in report["curves"]:
        assert {p["model"] for p in curve["points"]} | {curve["reference"]} <= names_with_curves
    assert report["sweeps"] == ["@merged"] and report["limits"]
    # The paper's questions are claims judged in the report, each naming two evaluated models.
    names = {s.config["name"] for s in table_evaluations}
    claims = report["claims"]
    assert {(c["model"], c["reference"]) for c in claims} >= {
        ("base (Western)", "MFCC + chroma (hand-made)"),
        *((f"{t} CPT", "base (Western)") for t in OTHERS),
        ("multi-tradition CPT", "base (Western)"),
        ("merged (TA)", "multi-tradition CPT"),
    }
    assert all({c["model"], c["reference"]} <= names for c in claims)


def test_every_encoder_of_the_demo_is_replicated_along_its_chain():
    """Three pre-training seeds: replica r of each encoder descends from init r, each replica
    has a seed of its own, and the report reads every replica's results."""
    from culturemert.pipeline.runner import step_seed

    pipeline = demo.load_demo()
    assert pipeline.replicates >= 3
    steps = pipeline.by_name
    for r in range(1, pipeline.replicates + 1):
        assert steps[f"base.{r}"].config["init"] == f"@init.{r}"
        assert steps[f"multi.{r}"].config["init"] == f"@base.{r}"
        assert steps[f"merged.{r}"].config["models"][0] == f"@only-makam.{r}"
        assert steps[f"eval-merged.{r}"].config["encoder"] == f"@merged.{r}"
    assert "corpus" in steps and "teacher" in steps and "eval-handcrafted" in steps  # run once
    seeds = {step_seed(pipeline.seed, f"base.{r}") for r in range(1, pipeline.replicates + 1)}
    assert len(seeds) == pipeline.replicates
    results = steps["report"].config["results"]
    assert f"@eval-base.{pipeline.replicates}" in results and "@eval-handcrafted" in results
    assert len(results) == 8 * pipeline.replicates + 1


def fake_results(path: Path) -> Path:
    """A results file of one model on one task, as ``culturemert evaluate`` writes it."""
    metrics = {m: {"mean": 0.5, "std": 0.01} for m in ("roc_auc", "map", "micro_f1", "macro_f1")}
    results = {"model": "tiny", "tasks": {"synth-western": {"metrics": metrics}}}
    path.write_text(json.dumps(results))
    return path


def test_demo_command_prints_the_report_and_reuses_its_outputs(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "demo.yaml"
    results = fake_results(tmp_path / "results.json")
    recipe.write_text(
        f"steps:\n  report: {{kind: report, title: Tiny, results: [{results}], limits: [Few.]}}\n"
    )
    monkeypatch.setattr(demo, "demo_recipe", lambda: recipe)
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    page = out / "report" / "report.html"
    assert printed.rstrip().endswith(f"report: {page}")
    assert "| tiny | 50.0 ± 1.0 / 50.0 ± 1.0 | 50.0 |" in printed  # the report's first table
    assert page.read_text().count("<table>") == 3  # two metric tables and the change table

    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert "report                 report     cached" in capsys.readouterr().out
    assert main(["demo", "--out", str(out), "--quiet", "--seed", "7"]) == 0
    assert "report                 report     ran" in capsys.readouterr().out
