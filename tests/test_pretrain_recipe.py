"""Recipes: YAML → dataclasses, dotted overrides, field-naming errors, the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from culturemert.pretrain.recipe import RecipeError, load_recipe, recipe_from_dict

RECIPES = Path(__file__).parents[1] / "recipes"
HASH = "teacher.hash=" + "0123456789abcdef" * 4

MINIMAL = """
init: models/mert
teacher: {targets: targets/, hash: abababababababababababababababababababababababababababababababab}
objective: {codebook_sizes: [8, 8]}
data: {manifests: [corpus.jsonl], replay_manifest: western.jsonl}
stages:
  - name: heads
    trainable: [heads]
    mixture: {traditions: [lyra, makam], replay: 0.2}
    schedule: {peak_lr: 5e-4, warmup_steps: 10}
    steps: 100
    batch_seconds: 20
  - name: full
    trainable: [all]
    mixture: {traditions: {lyra: 1, makam: 3}}
    schedule: {kind: warmup_decay, peak_lr: 1.0e-4, decay: cosine, end_lr: 1.0e-5}
    steps: 50
    batch_seconds: 10
    crop_seconds: 2.5
"""


def minimal() -> dict:
    return yaml.safe_load(MINIMAL)


def test_minimal_recipe_gets_merts_defaults():
    recipe = recipe_from_dict(minimal())
    heads, full = recipe.stages
    assert heads.schedule.peak_lr == 5e-4  # YAML reads 5e-4 as a string; it must become a float
    assert isinstance(heads.schedule.peak_lr, float)
    assert heads.optimizer.betas == (0.9, 0.98)
    assert (heads.optimizer.eps, heads.optimizer.weight_decay) == (1e-6, 0.01)
    assert heads.optimizer.grad_clip == 10.0
    assert heads.crop_seconds == 5.0 and heads.crops_per_step == 4
    assert full.crops_per_step == 4
    assert heads.mixture.traditions == ["lyra", "makam"]
    assert full.mixture.traditions == {"lyra": 1.0, "makam": 3.0}
    assert recipe.objective.codebook_sizes == [8, 8]
    assert recipe.objective.mask_prob == 0.8 and recipe.objective.logit_temp == 0.1
    assert recipe.engine.precision == "32"


def test_dotted_overrides_reach_every_level():
    recipe = recipe_from_dict(
        minimal(),
        [
            "stages.0.steps=10",
            "stages.full.schedule.peak_lr=3e-4",
            "stages.0.trainable=[heads, cnn]",
            "engine.precision=bf16-mixed",
            "objective.use_cqt=false",
            "data.num_workers=0",
        ],
    )
    assert recipe.stages[0].steps == 10
    assert recipe.stages[1].schedule.peak_lr == 3e-4
    assert recipe.stages[0].trainable == ["heads", "cnn"]
    assert recipe.engine.precision == "bf16-mixed"
    assert recipe.objective.use_cqt is False
    assert recipe.data.num_workers == 0


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("stages.0.steps=0", "stages.0.steps"),
        ("stages.0.steps=ten", "stages.0.steps"),
        ("stages.0.schedule.warmup_steps=101", "stages.0.schedule.warmup_steps"),
        ("stages.0.schedule.peak=1", "stages.0.schedule.peak"),
        ("stages.0.schedule.kind=triangle", "stages.0.schedule.kind"),
        ("stages.1.schedule.decay=exponential", "stages.1.schedule.decay"),
        ("stages.0.batch_seconds=12", "stages.0.batch_seconds"),
        ("stages.0.mixture.replay=1.5", "stages.0.mixture.replay"),
        ("stages.1.mixture.traditions.lyra=-1", "stages.1.mixture.traditions.lyra"),
        ("stages.0.optimizer.betas=[0.9]", "stages.0.optimizer.betas"),
        ("stages.1.name=heads", "stages.1.name"),
        ("stages.0.trainable=[]", "stages.0.trainable"),
        ("engine.precision=fp8", "engine.precision"),
        ("engine.strategy=deepspeed", "engine.strategy"),
        ("objective.final_dims=32", "objective.final_dims"),
        ("objective.use_cqt=maybe", "objective.use_cqt"),
        ("stages.5.steps=1", "stages.5"),
        ("stages.warmup.steps=1", "stages.warmup"),
    ],
)
def test_bad_values_name_their_field(override, field):
    with pytest.raises(RecipeError) as error:
        recipe_from_dict(minimal(), [override], where="run.yaml")
    assert f"{field}:" in str(error.value)
    assert str(error.value).startswith("run.yaml")


def test_missing_sections_and_replay_without_manifest_are_named():
    raw = minimal()
    del raw["teacher"]
    with pytest.raises(RecipeError, match="teacher: required"):
        recipe_from_dict(raw)
    raw = minimal()
    del raw["data"]["replay_manifest"]
    with pytest.raises(RecipeError, match=r"stages\.0\.mixture\.replay: .*replay_manifest"):
        recipe_from_dict(raw)


def test_override_syntax_errors_are_explained():
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        recipe_from_dict(minimal(), ["stages.0.steps"])


def test_yaml_file_errors_name_the_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [\n")
    with pytest.raises(RecipeError, match="broken.yaml: not valid YAML"):
        load_recipe(broken)


def test_culturemert_95m_recipe_is_two_stages_with_stage_one_replay():
    with pytest.raises(RecipeError, match="teacher.hash: expected the teacher's 64-hex-digit"):
        load_recipe(RECIPES / "culturemert-95m.yaml")
    recipe = load_recipe(RECIPES / "culturemert-95m.yaml", [HASH])
    first, second = recipe.stages
    assert first.mixture.replay == pytest.approx(0.2) and second.mixture.replay == 0.0
    assert "encoder" not in first.trainable and "all" not in first.trainable
    assert second.trainable == ["all"]
    assert set(first.mixture.traditions) == {"lyra", "makam", "hindustani", "carnatic"}
    assert recipe.objective.codebook_sizes == [1024] * 8
    assert first.crop_seconds == 5.0
    assert second.schedule.end_lr < second.schedule.peak_lr


@pytest.mark.parametrize("tradition", ["lyra", "makam", "hindustani", "carnatic"])
def test_single_tradition_recipes_load(tradition):
    recipe = load_recipe(RECIPES / f"cpt-{tradition}.yaml", [HASH, "stages.1.steps=4000"])
    assert [s.mixture.traditions for s in recipe.stages] == [[tradition], [tradition]]
    assert recipe.stages[1].steps == 4000
