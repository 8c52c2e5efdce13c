"""Two CPU processes under torchrun (DDP on gloo): same weights on every rank, disjoint data
shares, rank 0 alone writes, kill-and-resume is exact, and 2 × B/2 trains as 1 × B."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import random_state_dict, tiny_mert_config, write_checkpoint
from pretrain_corpus import corpus_recipe, stage
from pretrain_ddp_worker import parameter_hash

from culturemert.cli import main
from culturemert.model import load_encoder
from culturemert.pretrain import loop
from culturemert.pretrain.checkpoint import read_checkpoint
from culturemert.pretrain.recipe import EngineConfig, recipe_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = Path(__file__).with_name("pretrain_ddp_worker.py")
DDP = ["--devices", "2", "--set", "engine.strategy=ddp"]
# Per stage: crops read (updates × crops per update) and crops per micro-batch on each rank.
STAGE_CROPS = [2 * 4, 3 * 4]
MICRO_BATCH = [4 // 2, 4 // (2 * 2)]  # 4 crops per update over 2 ranks, × accumulate 2 in "full"
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_encoder_dir) -> dict:
    """One torchrun launch of 2 ranks running four pre-training runs one after the other."""
    root = tmp_path_factory.mktemp("ddp")
    stages = [stage("heads", ["heads"], 2), stage("full", ["all"], 3, accumulate=2)]
    raw = corpus_recipe(root / "data", tiny_encoder_dir, stages=stages)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    # Without dropout and noise mixing (whose segments come from the rank's own clips), two
    # ranks with half the batch each must train exactly as one process with the whole batch.
    config = {**tiny_mert_config(), **NO_DROPOUT}
    plain = write_checkpoint(root / "plain", config, random_state_dict(config), fmt="bin")
    exact = {**raw, "init": str(plain), "objective": {**raw["objective"], "noise_prob": 0.0}}
    (root / "exact.yaml").write_text(yaml.safe_dump(exact))
    plan = {
        "probes": str(root / "probes"),
        "runs": [
            {
                "name": "unbroken",
                "recipe": str(recipe),
                "out": str(root / "unbroken"),
                "args": [*DDP, "--logger", "tensorboard"],
            },
            {
                "name": "killed",
                "recipe": str(recipe),
                "out": str(root / "broken"),
                "args": DDP,
                "kill_at": [1, 3],  # after logging full step 3, before its checkpoint
            },
            {
                "name": "resumed",
                "recipe": str(recipe),
                "out": str(root / "broken"),
                "args": [*DDP, "--resume"],
            },
            {
                "name": "exact",
                "recipe": str(root / "exact.yaml"),
                "out": str(root / "exact"),
                "args": DDP,
            },
        ],
    }
    (root / "plan.json").write_text(json.dumps(plan))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(WORKER), str(root / "plan.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    probes = {
        (run["name"], rank): json.loads(
            (root / "probes" / f"{run['name']}.rank{rank}.json").read_text()
        )
        for run in plan["runs"]
        for rank in (0, 1)
    }
    return {"root": root, "probes": probes, "stdout": done.stdout, "exact": exact}


def read_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_ranks_hold_identical_weights_after_reading_disjoint_shares(runs):
    probes = runs["probes"]
    first, second = probes["unbroken", 0], probes["unbroken", 1]
    assert first["code"] == second["code"] == 0
    assert first["parameters"] == second["parameters"]
    saved = read_checkpoint(runs["root"] / "unbroken" / loop.CHECKPOINT_FILE)
    assert parameter_hash(saved["model"]) == first["parameters"]
    # Micro-batches alternate between the ranks: rank r reads micro-batches r, r + 2, …
    for rank, probe in ((0, first), (1, second)):
        for stage_index, (crops, micro) in enumerate(zip(STAGE_CROPS, MICRO_BATCH, strict=True)):
            expected = [i for i in range(crops) if (i // micro) % 2 == rank]
            assert sorted(i for s, i in probe["crops"] if s == stage_index) == expected


def test_only_rank_zero_writes_and_the_logged_loss_is_finite(runs):
    root, probes = runs["root"], runs["probes"]
    for name in ("unbroken", "killed", "resumed", "exact"):
        assert probes[name, 1]["written"] == [], f"rank 1 wrote files in run {name}"
    written = set(probes["unbroken", 0]["written"])
    assert {"metrics.csv", "recipe.yaml", "checkpoints/last.ckpt", "stages/1-full"} <= written
    assert any(path.startswith("logs/tensorboard/events.out.tfevents.") for path in written)
    rows = read_rows(root / "unbroken")
    assert [int(r["global_step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    # The command prints each export once, not once per rank.
    assert runs["stdout"].count(f"exported {root / 'unbroken' / 'stages' / '1-full'}\n") == 1
    plain = load_encoder(root / "unbroken" / "stages" / "1-full").state_dict()
    saved = read_checkpoint(root / "unbroken" / loop.CHECKPOINT_FILE)["model"]
    assert all(torch.equal(tensor, saved[f"encoder.{name}"]) for name, tensor in plain.items())


def test_a_killed_two_rank_run_resumes_exactly(runs):
    root, probes = runs["root"], runs["probes"]
    assert probes["killed", 0]["code"] == probes["killed", 1]["code"] == "killed"
    for rank in (0, 1):
        assert probes["resumed", rank]["parameters"] == probes["unbroken", rank]["parameters"]
        # The resumed ranks read only the crops of the update after the checkpoint (full 2).
        assert sorted(i for _, i in probes["resumed", rank]["crops"]) == [8 + rank, 10 + rank]
    unbroken, resumed = read_rows(root / "unbroken"), read_rows(root / "broken")
    for a, b in zip(unbroken, resumed, strict=True):
        a.pop("audio_hours_per_hour"), b.pop("audio_hours_per_hour")
        assert a == b


def test_two_ranks_with_half_batches_train_as_one_process_with_the_whole_batch(runs, tmp_path):
    loop.train(recipe_from_dict(runs["exact"]), tmp_path / "one")
    one, two = read_rows(tmp_path / "one"), read_rows(runs["root"] / "exact")
    for a, b in zip(one, two, strict=True):
        for column in ("loss", "loss_acoustic", "loss_feature_penalty", "accuracy_0", "grad_norm"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-5, abs=1e-7)
    single = read_checkpoint(tmp_path / "one" / loop.CHECKPOINT_FILE)["model"]
    double = read_checkpoint(runs["root"] / "exact" / loop.CHECKPOINT_FILE)["model"]
    start = load_encoder(Path(runs["exact"]["init"])).state_dict()
    assert not torch.equal(
        single["encoder.encoder.layers.0.attention.q_proj.weight"],
        start["encoder.layers.0.attention.q_proj.weight"],
    )
    for name, tensor in single.items():
        torch.testing.assert_close(double[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def test_fsdp_on_cpu_stops_with_a_clear_message(runs, tmp_path, capsys):
    with pytest.raises(loop.RunError, match="engine.strategy: fsdp .* use engine.strategy=ddp"):
        loop.make_fabric(EngineConfig(accelerator="cpu", devices=2, strategy="fsdp"))
    recipe = runs["root"] / "recipe.yaml"
    args = [
        "pretrain",
        str(recipe),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "engine.strategy=fsdp",
    ]
    assert main(args) == 1
    assert "fsdp" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
