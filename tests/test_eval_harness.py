"""A tiny end-to-end evaluation: generated tones, a generic manifest, a tiny encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from culturemert.cli import main
from culturemert.evaluate.features import read_entry
from culturemert.evaluate.harness import (
    evaluate_encoder,
    task_datasets,
    validation_score,
)
from culturemert.evaluate.results import load_results, validate_results
from culturemert.evaluate.settings import EvaluationConfig, ProbeSettings, SelectionConfig

SMALL = SelectionConfig(
    learning_rates=(3e-3, 3e-2),
    seeds=2,
    probe=ProbeSettings(hidden=16, batch_size=8, max_epochs=8, patience=3),
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Tracks tagged by pitch (low/high) and by texture (noisy or clean); one listed file absent."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "generic"
    (folder / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(36):
        pitch = "high" if i % 2 else "low"
        noisy = i % 3 == 0
        t = np.arange(int(0.6 * 24000)) / 24000
        wave = 0.4 * np.sin(2 * np.pi * (1760 if pitch == "high" else 110) * t)
        wave += (0.3 if noisy else 0.01) * rng.standard_normal(len(t))
        sf.write(folder / "audio" / f"{i}.wav", wave.astype(np.float32), 24000)
        split = "train" if i < 20 else "valid" if i < 28 else "test"
        tags = [f"pitch--{pitch}"] + (["texture--noisy"] if noisy else [])
        rows.append({"track_id": f"r{i}", "path": f"audio/{i}.wav", "tags": tags, "split": split})
    rows.append(
        {"track_id": "lost", "path": "audio/lost.wav", "tags": ["pitch--low"], "split": "test"}
    )
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_end_to_end_results_and_cache_reuse(tiny_encoder_dir, data_root, tmp_path):
    config = EvaluationConfig(window_seconds=0.25, selection=SMALL, cache_dir=str(tmp_path))
    results = evaluate_encoder(
        tiny_encoder_dir, task_datasets(["generic"], data_root), config, progress=False
    )
    validate_results(results, "in memory")
    entry = results["tasks"]["generic"]
    assert entry["tracks"] == {"train": 20, "valid": 8, "test": 8}
    assert entry["missing_audio"] == 1
    assert entry["excluded_tags"] == 0
    low, high = entry["roc_auc_interval"]
    assert 0.0 <= low <= high <= 1.0  # of the seed-averaged predictions

    grid = entry["validation"]["grid"]
    assert len(grid) == 2 * 4 * 2  # probe kinds x (3 layers + weighting) x learning rates
    best = max(grid, key=lambda row: row["validation_roc_auc"])
    chosen = entry["selected"]
    assert (chosen["probe"], chosen["layer"], chosen["lr"]) == (
        best["kind"],
        best["layer"],
        best["lr"],
    )
    assert entry["validation"]["roc_auc"]["mean"] == best["validation_roc_auc"]
    assert len(entry["validation"]["best_epochs"]) == 2  # one per seed
    # Pitch is plainly audible in the features of even a random encoder.
    assert entry["per_tag"]["pitch--high"]["roc_auc"] > 0.9
    assert set(entry["per_family"]) == {"pitch", "texture"}
    assert results["versions"]["torch"] and results["config"]["selection"]["seeds"] == 2

    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 3  # one cache entry per split
    again = evaluate_encoder(
        tiny_encoder_dir, task_datasets(["generic"], data_root), config, progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == entries  # read back, nothing new
    assert again["tasks"]["generic"]["metrics"] == entry["metrics"]  # deterministic

    score = validation_score(
        tiny_encoder_dir, replace(config, tasks=("generic",), data_root=str(data_root))
    )
    assert score == pytest.approx(entry["validation"]["roc_auc"]["mean"])


def test_a_second_evaluation_opens_no_audio_file(
    tiny_encoder_dir, data_root, tmp_path, audio_opens
):
    for path in (data_root / "generic" / "audio").iterdir():  # audio unchanged for an hour
        os.utime(path, (path.stat().st_mtime - 3600,) * 2)
    config = EvaluationConfig(
        window_seconds=0.25, selection=SMALL, cache_dir=str(tmp_path), workers=0
    )
    first = evaluate_encoder(
        tiny_encoder_dir, task_datasets(["generic"], data_root), config, progress=False
    )
    assert audio_opens  # hashed and decoded, in this process (no workers)
    audio_opens.clear()
    second = evaluate_encoder(
        tiny_encoder_dir, task_datasets(["generic"], data_root), config, progress=False
    )
    assert audio_opens == []
    assert second["tasks"]["generic"]["metrics"] == first["tasks"]["generic"]["metrics"]


def test_validation_probe_scores_match_scikit_learn(tiny_encoder_dir, data_root, tmp_path):
    from culturemert.evaluate.datasets import build_dataset
    from culturemert.evaluate.features import FeatureCache, settings_for
    from culturemert.evaluate.harness import _split_data
    from culturemert.evaluate.selection import select_probe

    dataset = build_dataset("generic", data_root)
    settings = settings_for(tiny_encoder_dir, window_seconds=0.25)
    cache = FeatureCache(tiny_encoder_dir, tmp_path, settings, progress=False)
    splits = [_split_data(dataset, s, cache, None, print)[0] for s in ("train", "valid", "test")]
    selection = select_probe(*splits, SMALL, progress=False)
    labels = splits[1].labels
    per_seed = [
        np.mean([roc_auc_score(labels[:, j], s[:, j]) for j in range(labels.shape[1])])
        for s in selection.valid_scores
    ]
    assert np.mean(per_seed) == pytest.approx(selection.chosen["validation_roc_auc"], abs=1e-9)


def test_cli_writes_results_and_prints_tables(tiny_encoder_dir, data_root, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(
        [
            "evaluate",
            str(tiny_encoder_dir),
            "--tasks",
            "generic",
            "--data-root",
            str(data_root),
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--seeds",
            "1",
            "--probes",
            "linear",
            "--lrs",
            "1e-2",
            "--max-epochs",
            "3",
            "--window-seconds",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "ROC-AUC / mAP" in printed and "Micro-F1 / Macro-F1" in printed
    saved = load_results(out)
    assert saved["tasks"]["generic"]["selected"]["probe"] == "linear"
    assert saved["config"]["window_seconds"] is None


def test_cli_rejects_an_unknown_task(tiny_encoder_dir, data_root, capsys):
    code = main(
        [
            "evaluate",
            str(tiny_encoder_dir),
            "--tasks",
            "generic,nope",
            "--data-root",
            str(data_root),
        ]
    )
    assert code == 2
    assert "'nope'" in capsys.readouterr().err


def test_evaluation_config_from_yaml_scores_like_the_dataclass(
    tiny_encoder_dir, data_root, tmp_path
):
    from culturemert.evaluate.harness import validation_scorer
    from culturemert.evaluate.settings import load_evaluation_config

    config_file = tmp_path / "eval.yaml"
    config_file.write_text(
        f"tasks: generic\ndata_root: {data_root}\nwindow_seconds: 0.25\n"
        f"cache_dir: {tmp_path / 'cache'}\nmax_seconds: {{generic: 0.5}}\n"
        "selection:\n  learning_rates: [0.003, 0.03]\n  seeds: 2\n"
        "  probe: {hidden: 16, batch_size: 8, max_epochs: 8, patience: 3, lr_patience: 2}\n"
    )
    by_hand = EvaluationConfig(
        tasks=("generic",),
        data_root=str(data_root),
        window_seconds=0.25,
        cache_dir=str(tmp_path / "cache"),
        selection=replace(SMALL, probe=replace(SMALL.probe, lr_patience=2)),
        max_seconds={"generic": 0.5},
    )
    assert load_evaluation_config(config_file) == by_hand
    assert validation_scorer(config_file)(tiny_encoder_dir) == pytest.approx(
        validation_score(tiny_encoder_dir, by_hand)
    )
    seeds = load_evaluation_config(config_file, ["selection.seeds=1", "tasks=generic,generic"])
    assert seeds.selection.seeds == 1 and seeds.tasks == ("generic", "generic")
    with pytest.raises(
        ValueError, match=r"eval.yaml: selection.seeds: expected an integer, got 'a'"
    ):
        load_evaluation_config(config_file, ["selection.seeds=a"])
    config_file.write_text("tasks: generic\nwindow_secs: 3\n")
    with pytest.raises(ValueError, match="window_secs"):
        load_evaluation_config(config_file)
    config_file.write_text("tasks: generic\nselection: {probe: {lr_factor: 2}}\n")
    with pytest.raises(ValueError, match="lr_factor"):
        load_evaluation_config(config_file)


def test_cli_reads_a_config_and_lets_flags_and_set_override_it(
    tiny_encoder_dir, data_root, tmp_path, capsys
):
    config_file = tmp_path / "eval.yaml"
    config_file.write_text(
        "tasks: [generic]\ndata_root: data\nwindow_seconds: 0.25\n"
        "selection: {kinds: [mlp], seeds: 3, learning_rates: [0.01], probe: {max_epochs: 2}}\n"
    )
    (tmp_path / "data").symlink_to(data_root)  # relative to the config file
    out = tmp_path / "results.json"
    arguments = ["evaluate", str(tiny_encoder_dir), "--config", str(config_file)]
    arguments += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    arguments += ["--probes", "linear", "--set", "selection.seeds=1", "--set", "pool=max"]
    assert main(arguments) == 0
    config = load_results(out)["config"]
    assert config["selection"]["kinds"] == ["linear"]  # the flag beat the file
    assert config["selection"]["seeds"] == 1 and config["pool"] == "max"  # --set too
    assert config["selection"]["probe"]["max_epochs"] == 2 and config["window_seconds"] == 0.25
    assert main([*arguments, "--set", "selection.probe.dropout=2"]) == 2
    assert "selection.probe: probe settings: dropout must be in [0, 1)" in capsys.readouterr().err


def test_truncation_defaults_overrides_and_errors(tiny_encoder_dir, data_root, tmp_path):
    from culturemert.evaluate.datasets import DatasetError, build_dataset
    from culturemert.evaluate.harness import audio_limit

    dataset = build_dataset("generic", data_root)
    assert audio_limit(replace(dataset, name="makam", max_seconds=150.0), EvaluationConfig()) == 150
    override = EvaluationConfig(max_seconds={"makam": None, "generic": 0.3})
    assert audio_limit(replace(dataset, name="makam", max_seconds=150.0), override) is None
    config = replace(override, window_seconds=0.25, selection=SMALL, cache_dir=str(tmp_path))
    results = evaluate_encoder(
        tiny_encoder_dir,
        task_datasets(["generic"], data_root),
        config,
        with_test=False,
        progress=False,
    )
    assert results["config"]["max_seconds"] == {"generic": 0.3}
    metas = [json.loads(meta.read_text()) for meta in tmp_path.glob("*/meta.json")]
    assert len(metas) == 2 and {meta["settings"]["max_seconds"] for meta in metas} == {0.3}
    for bad in ({"makm": 10}, {"makam": -1}):
        with pytest.raises(DatasetError, match="max_seconds"):
            evaluate_encoder(
                tiny_encoder_dir,
                task_datasets(["generic"], data_root),
                replace(config, max_seconds=bad),
            )


def test_torchrun_ranks_share_the_embedding_and_rank_zero_trains(
    tiny_encoder_dir, data_root, tmp_path
):
    def arguments(name: str) -> list[str]:
        return [
            "evaluate",
            str(tiny_encoder_dir),
            "--tasks",
            "generic",
            "--data-root",
            str(data_root),
            "--out",
            str(tmp_path / f"{name}.json"),
            "--cache",
            str(tmp_path / f"{name}-cache"),
            "--seeds",
            "1",
            "--probes",
            "linear",
            "--lrs",
            "1e-2",
            "--max-epochs",
            "3",
            "--window-seconds",
            "0.25",
            "--device",
            "cpu",
            "--quiet",
        ]

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "culturemert", *arguments("ranks")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ROC-AUC / mAP") == 1  # rank 0 alone reports
    assert main(arguments("single")) == 0

    def entries(name: str) -> dict[str, Path]:
        return {
            json.loads((meta.parent / "meta.json").read_text())["split"]: meta.parent
            for meta in (tmp_path / f"{name}-cache").glob("*/meta.json")
        }

    shared, alone = entries("ranks"), entries("single")
    assert sorted(shared) == sorted(alone) == ["generic-test", "generic-train", "generic-valid"]
    assert not list((tmp_path / "ranks-cache").glob(".*"))  # no shard or staging folder left
    for split, folder in shared.items():
        joined, whole = read_entry(folder), read_entry(alone[split])
        assert joined.track_ids == whole.track_ids  # the split's order, not the ranks'
        np.testing.assert_array_equal(joined.track_index, whole.track_index)
        np.testing.assert_allclose(
            np.asarray(joined.features, np.float32),
            np.asarray(whole.features, np.float32),
            rtol=2e-3,
            atol=2e-3,
        )
    ranks, single = load_results(tmp_path / "ranks.json"), load_results(tmp_path / "single.json")
    assert ranks["tasks"]["generic"]["tracks"] == single["tasks"]["generic"]["tracks"]
    assert ranks["runtime"]["processes"] == 2 and single["runtime"]["processes"] == 1
