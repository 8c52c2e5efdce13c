"""The training loop: loss falls, frozen weights stay put, kill-and-resume is exact, export loads."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from pretrain_corpus import corpus_recipe, stage
from transformers import HubertModel

from culturemert.model import load_encoder
from culturemert.pretrain import loop
from culturemert.pretrain.checkpoint import read_checkpoint
from culturemert.pretrain.metrics_log import MetricsLog
from culturemert.pretrain.objective import PretrainingObjective
from culturemert.pretrain.recipe import recipe_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def read_rows(run) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_loss_falls_on_a_generated_corpus(tmp_path, tiny_encoder_dir):
    full = stage("full", ["all"], 30, batch_seconds=4.0)
    full["schedule"]["peak_lr"] = 3e-3
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=[full])
    raw["checkpoint_every"] = 100
    loop.train(recipe_from_dict(raw), tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert [int(r["global_step"]) for r in rows] == list(range(1, 31))
    losses = [float(r["loss_acoustic"]) for r in rows]
    # Uniform guesses over both codebooks cost log 8 + log 4 ≈ 3.47, which is where the new
    # heads start; the skewed labels' entropy is ≈ 2.3, which learning approaches.
    uniform = math.log(8) + math.log(4)
    assert losses[0] > 0.85 * uniform
    assert sum(losses[-10:]) / 10 < 0.8 * uniform
    assert {"lr", "accuracy_0", "accuracy_1", "audio_hours_per_hour", "loss"} <= set(rows[0])
    assert float(rows[0]["lr"]) == pytest.approx(0.0)  # re-warm starts from 0
    assert float(rows[1]["lr"]) == pytest.approx(3e-3)  # peak after one warm-up step


def test_frozen_parameters_stay_bit_identical_and_export_loads(tmp_path, tiny_encoder_dir):
    stages = [stage("heads-cnn", ["heads", "cnn"], 3), stage("full", ["all"], 2)]
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=stages)
    exported = loop.train(recipe_from_dict(raw), tmp_path / "run")
    assert [p.name for p in exported] == ["0-heads-cnn", "1-full"]

    start = load_encoder(tiny_encoder_dir).state_dict()
    after_heads = load_encoder(exported[0]).state_dict()
    after_full = load_encoder(exported[1]).state_dict()
    for name, tensor in start.items():
        if name.startswith("feature_extractor."):
            continue
        assert torch.equal(after_heads[name], tensor), f"{name} moved while frozen"
    moved = [n for n in start if n.startswith("feature_extractor.")]
    assert any(not torch.equal(after_heads[n], start[n]) for n in moved)
    assert not torch.equal(
        after_full["encoder.layers.0.attention.q_proj.weight"],
        start["encoder.layers.0.attention.q_proj.weight"],
    )

    # The export is a plain Hugging Face folder: transformers alone loads the same weights.
    plain = HubertModel.from_pretrained(exported[1]).eval()
    ours = load_encoder(exported[1])
    audio = torch.randn(1, 12000)
    with torch.no_grad():
        assert torch.equal(plain(audio).last_hidden_state, ours(audio).last_hidden_state)
    saved = read_checkpoint(tmp_path / "run" / loop.CHECKPOINT_FILE)
    for name, tensor in after_full.items():
        assert torch.equal(saved["model"][f"encoder.{name}"], tensor)


class Killed(Exception):
    """Stands for the process being killed."""


def test_killed_and_resumed_run_gives_the_same_losses(tmp_path, tiny_encoder_dir, monkeypatch):
    stages = [stage("heads", ["heads"], 3), stage("full", ["all"], 4, accumulate=2)]
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=stages, replay=True)
    raw["stages"][0]["mixture"]["replay"] = 0.25
    recipe = recipe_from_dict(raw)
    loop.train(recipe, tmp_path / "unbroken")

    write = MetricsLog.write

    def write_then_die(self, row):
        write(self, row)
        if row["global_step"] == 6:  # full step 3; the last checkpoint is full step 2
            raise Killed

    monkeypatch.setattr(MetricsLog, "write", write_then_die)
    with pytest.raises(Killed):
        loop.train(recipe, tmp_path / "broken")
    assert read_checkpoint(tmp_path / "broken" / loop.CHECKPOINT_FILE)["step"] == 2
    monkeypatch.setattr(MetricsLog, "write", write)
    with pytest.raises(loop.RunError, match="--resume"):
        loop.train(recipe, tmp_path / "broken")
    loop.train(recipe, tmp_path / "broken", resume=True)

    unbroken, resumed = read_rows(tmp_path / "unbroken"), read_rows(tmp_path / "broken")
    assert [r["global_step"] for r in resumed] == [str(s) for s in range(1, 8)]
    for a, b in zip(unbroken, resumed, strict=True):
        a.pop("audio_hours_per_hour"), b.pop("audio_hours_per_hour")
        assert a == b
    for name in ("0-heads", "1-full"):
        a = load_encoder(tmp_path / "unbroken" / "stages" / name).state_dict()
        b = load_encoder(tmp_path / "broken" / "stages" / name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_encoder_dir, monkeypatch
):
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=[stage("full", ["all"], 5)])
    forward, calls = PretrainingObjective.forward, []

    def nan_on_fourth_update(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(PretrainingObjective, "forward", nan_on_fourth_update)
    with pytest.raises(loop.NonFiniteLossError, match="update 3"):
        loop.train(recipe_from_dict(raw), tmp_path / "run")
    saved = read_checkpoint(tmp_path / "run" / loop.CHECKPOINT_FILE)
    assert (saved["stage"], saved["step"]) == (0, 2)
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert not (tmp_path / "run" / "stages").exists()


def test_a_training_checkpoint_can_start_a_new_run(tmp_path, tiny_encoder_dir):
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=[stage("heads", ["heads"], 2)])
    loop.train(recipe_from_dict(raw), tmp_path / "first")
    checkpoint = tmp_path / "first" / loop.CHECKPOINT_FILE
    raw["init"] = str(checkpoint)
    objective, _ = loop.build_objective(recipe_from_dict(raw))
    saved = read_checkpoint(checkpoint)["model"]
    assert all(torch.equal(t, saved[n]) for n, t in objective.state_dict().items())

    raw["objective"]["codebook_sizes"] = [8, 8]
    with pytest.raises(loop.RunError, match="does not fit this recipe's objective"):
        loop.build_objective(recipe_from_dict(raw))


def test_parameter_groups_select_the_named_modules(tiny_encoder_dir):
    from culturemert.pretrain.freeze import set_trainable, trainable_names
    from culturemert.pretrain.objective import ObjectiveConfig

    objective = PretrainingObjective(
        load_encoder(tiny_encoder_dir), ObjectiveConfig([8, 4])
    ).train()
    names = {n for n, _ in objective.named_parameters()}
    heads = trainable_names(objective, ["heads"], "t")
    assert heads == {n for n in names if n.startswith("heads.")}
    cnn = trainable_names(objective, ["cnn"], "t")
    assert cnn == {n for n in names if n.startswith("encoder.feature_extractor.")}
    encoder = trainable_names(objective, ["encoder"], "t")
    assert "encoder.masked_spec_embed" in encoder and "encoder.encoder.layer_norm.weight" in encoder
    assert heads | cnn | encoder | trainable_names(objective, ["projection"], "t") == names
    assert trainable_names(objective, ["all"], "t") == names
    layer = trainable_names(objective, ["encoder.encoder.layers.1.*"], "t")
    assert layer and all(n.startswith("encoder.encoder.layers.1.") for n in layer)
    with pytest.raises(ValueError, match=r"stages\.0\.trainable: 'decoder\.\*' matches no"):
        trainable_names(objective, ["decoder.*"], "stages.0.trainable")

    trainable = set_trainable(objective, ["heads"], "t")
    assert {id(p) for p in trainable} == {
        id(p) for n, p in objective.named_parameters() if n in heads
    }
    # A frozen front end must not make autograd run backward through the whole network.
    assert not objective.encoder.feature_extractor(torch.randn(1, 800)).requires_grad


def test_a_snapshot_is_the_encoder_a_shorter_stage_ends_with(tmp_path, tiny_encoder_dir):
    # Constant learning rate after one warm-up update: 2 updates of a 3-update stage are the
    # same updates as a whole 2-update stage, so the snapshot must equal that stage's export.
    schedule = {"kind": "constant_cooldown", "peak_lr": 2e-3, "warmup_steps": 1}
    longer = stage("full", ["all"], 3, schedule=schedule, snapshots=[2])
    shorter = stage("full", ["all"], 2, schedule=schedule)
    loop.train(
        recipe_from_dict(corpus_recipe(tmp_path, tiny_encoder_dir, stages=[longer])), tmp_path / "a"
    )
    [reference] = loop.train(
        recipe_from_dict(corpus_recipe(tmp_path, tiny_encoder_dir, stages=[shorter])),
        tmp_path / "b",
    )
    snapshot = tmp_path / "a" / "snapshots" / "0-full-2"
    ours, expected = load_encoder(snapshot).state_dict(), load_encoder(reference).state_dict()
    assert all(torch.equal(ours[name], expected[name]) for name in expected)
    final = load_encoder(tmp_path / "a" / "stages" / "0-full").state_dict()
    assert not all(torch.equal(final[name], expected[name]) for name in expected)
    assert "after 2 of its 3 updates" in (snapshot / "README.md").read_text()


@pytest.mark.parametrize("snapshots", [[0], [3], [5]])
def test_snapshots_must_fall_inside_the_stage(tmp_path, tiny_encoder_dir, snapshots):
    raw = corpus_recipe(
        tmp_path, tiny_encoder_dir, stages=[stage("full", ["all"], 3, snapshots=snapshots)]
    )
    with pytest.raises(
        ValueError, match=r"stages\.0\.snapshots: list updates between 1 and steps − 1 \(2\)"
    ):
        recipe_from_dict(raw)
