"""The λ sweep, the recipes and the ``culturemert merge`` command."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from merge_reference import make_checkpoints, read_state
from safetensors.torch import load_file

from culturemert.cli import main
from culturemert.merge import MergeRecipe, load_recipe, parse_grid, sweep_lambda

NAME = "encoder.layers.0.attention.q_proj.weight"
RECIPES = Path(__file__).parents[1] / "recipes"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    return make_checkpoints(tmp_path_factory.mktemp("sweep"))


def applied_lambda(checkpoints: dict, merged_dir: Path) -> float:
    """The λ a task-arithmetic merge applied, read back from one tensor."""
    base = read_state(checkpoints["base"])[NAME]
    summed = sum(read_state(m)[NAME] - base for m in checkpoints["models"])
    merged = load_file(merged_dir / "model.safetensors")[NAME]
    return float(((merged - base) * summed).sum() / (summed * summed).sum())


def test_parse_grid():
    grid = parse_grid("0.1:1.0:0.1")
    assert len(grid) == 10 and grid[0] == 0.1 and grid[-1] == 1.0 and grid[2] == 0.3
    assert parse_grid("0.2,0.5") == (0.2, 0.5)
    with pytest.raises(ValueError, match="start:stop:step"):
        parse_grid("0.1:x:0.1")
    with pytest.raises(ValueError, match="positive step"):
        parse_grid("0.5:0.1:0.1")


def test_sweep_keeps_the_best_merge(checkpoints, tmp_path):
    seen = []

    def scorer(model_dir: Path) -> float:  # best at λ = 0.35: grid points 0.3 and 0.5 differ
        lam = applied_lambda(checkpoints, model_dir)
        seen.append(lam)
        return -((lam - 0.35) ** 2)

    recipe = MergeRecipe(
        base=str(checkpoints["base"]), models=tuple(map(str, checkpoints["models"]))
    )
    out = tmp_path / "best"
    result = sweep_lambda(recipe, [0.1, 0.3, 0.5, 0.7], scorer, out, metric="fit", progress=False)
    assert [round(lam, 4) for lam in seen] == [0.1, 0.3, 0.5, 0.7]
    assert result.best_lambda == 0.3 and result.output == out
    assert abs(applied_lambda(checkpoints, out) - 0.3) < 1e-4
    with open(out / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["lambda"]) for row in rows] == [0.1, 0.3, 0.5, 0.7]
    assert [float(row["fit"]) for row in rows] == pytest.approx(list(result.scores))
    assert [row["best"] for row in rows] == ["0", "1", "0", "0"]
    assert (out / "sweep.png").stat().st_size > 0
    card = (out / "README.md").read_text()
    assert "lambda: 0.3" in card and "best λ = 0.3" in card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no other merge left


def test_merge_recipes_in_the_repository_parse():
    names = ["culturemert-ta-95m.yaml", *(p.name for p in RECIPES.glob("merge-*.yaml"))]
    recipes = {name: load_recipe(RECIPES / name) for name in names}
    ta = recipes["culturemert-ta-95m.yaml"]
    assert ta.method == "task_arithmetic" and ta.lam == 0.2 and len(ta.models) == 4
    assert ta.base == "m-a-p/MERT-v1-95M"
    assert all(len(recipe.models) == 4 for recipe in recipes.values())


def test_cli_merges_from_a_recipe_with_overrides(checkpoints, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    models = "\n".join(f"  - {m}" for m in checkpoints["models"])
    recipe.write_text(f"base: {checkpoints['base']}\nmodels:\n{models}\nlambda: 0.9\n")
    out = tmp_path / "merged"
    code = main(
        ["merge", "--recipe", str(recipe), "--lambda", "0.25", "--out", str(out), "--quiet"]
    )
    assert code == 0
    assert abs(applied_lambda(checkpoints, out) - 0.25) < 1e-4


def test_cli_sweep_with_a_named_scorer(checkpoints, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_scorer.py").write_text(
        "import json, pathlib\n"
        "def make(target):\n"
        "    def score(model_dir):\n"
        "        lam = json.loads(\n"
        "            pathlib.Path(model_dir, 'README.md').read_text().split('lambda: ')[1]\n"
        "            .split()[0])\n"
        "        return -abs(lam - float(target))\n"
        "    return score\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "merged"
    args = ["merge", "--base", str(checkpoints["base"]), "--models"]
    args += [str(m) for m in checkpoints["models"]]
    args += ["--sweep", "0.1:0.5:0.2", "--select-on", "my_scorer:make=0.45"]
    code = main([*args, "--out", str(out), "--quiet"])
    assert code == 0
    assert "best λ = 0.5" in capsys.readouterr().out
    assert abs(applied_lambda(checkpoints, out) - 0.5) < 1e-4


def test_cli_reports_bad_inputs(checkpoints, tmp_path, capsys):
    args = ["merge", "--base", str(checkpoints["base"]), "--models", str(tmp_path)]
    code = main([*args, "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    assert f"{tmp_path}/config.json: cannot read the model config" in capsys.readouterr().err
    code = main(
        [
            "merge",
            "--base",
            str(checkpoints["base"]),
            "--models",
            str(tmp_path),
            "--method",
            "ties",
            "--lambda",
            "1",
            "2",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "single lambda" in capsys.readouterr().err


def test_lambdas_that_print_alike_keep_their_own_merges(checkpoints, tmp_path):
    # 0.1234561 and 0.1234562 print alike with six digits; the first is best and must survive.
    recipe = MergeRecipe(
        base=str(checkpoints["base"]), models=tuple(map(str, checkpoints["models"]))
    )
    lambdas = [0.1234561, 0.1234562, 0.9]
    scores = iter([1.0, 0.0, 0.5])
    out = tmp_path / "best"
    result = sweep_lambda(recipe, lambdas, lambda _: next(scores), out, progress=False)
    assert result.best_lambda == 0.1234561
    assert abs(applied_lambda(checkpoints, out) - 0.1234561) < 1e-5
    assert not (out / ".candidates").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
