"""Model cards on every encoder written, read back with huggingface_hub's own parsers, and
``culturemert card`` adding the paper's tables for an evaluation results file."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from merge_reference import make_checkpoints
from pretrain_corpus import corpus_recipe, stage
from test_eval_report import constructed_results

from culturemert.cli import main
from culturemert.evaluate.results import save_results
from culturemert.manifest import read_manifest
from culturemert.merge import MergeRecipe, merge_checkpoints
from culturemert.model import EncoderCard, Lineage, load_encoder, save_encoder
from culturemert.pretrain import loop
from culturemert.pretrain.recipe import recipe_from_dict

LICENCE = "cc-by-nc-4.0"
BASE_CARD = f"---\nlicense: {LICENCE}\ntags:\n- music\n---\n\n# MERT-v1-95M\n"


def with_card(source, folder):
    """A copy of an encoder folder whose README.md names MERT's licence, as MERT's repo does."""
    shutil.copytree(source, folder)
    (folder / "README.md").write_text(BASE_CARD)
    return folder


def sections(card: ModelCard) -> dict[str, str]:
    """``## `` sections of a card body by title (split here, independently of the card code)."""
    parts = ("\n" + card.text).split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1].strip() for part in parts}


def test_save_encoder_inherits_the_licence_of_the_folder_it_was_loaded_from(
    tiny_encoder_dir, tmp_path
):
    base = with_card(tiny_encoder_dir, tmp_path / "mert")
    out = save_encoder(load_encoder(base), tmp_path / "out")
    meta = metadata_load(out / "README.md")
    assert meta["license"] == LICENCE and "base_model" not in meta  # a local folder: no hub id
    assert meta["library_name"] == "transformers"
    assert {"audio", "music", "culturemert"} <= set(meta["tags"])
    assert str(base) in sections(ModelCard.load(out / "README.md"))["Licence"]


def test_save_encoder_card_argument_and_unknown_licence(tiny_encoder_dir, tmp_path):
    model = load_encoder(tiny_encoder_dir)  # no card beside it: no licence to inherit
    out = save_encoder(model, tmp_path / "plain")
    meta = metadata_load(out / "README.md")
    assert "license" not in meta and "base_model" not in meta
    assert "Not stated" in sections(ModelCard.load(out / "README.md"))["Licence"]

    card = EncoderCard(
        title="Converted",
        lineage=Lineage("m-a-p/MERT-v1-95M", LICENCE, "as given"),
        tags=("fairseq",),
        sections=(("Conversion", "From `MERT-v1-95M_fairseq.pt`."),),
    )
    out = save_encoder(model, tmp_path / "given", card=card)
    loaded = ModelCard.load(out / "README.md")
    assert loaded.data.license == LICENCE and loaded.data.base_model == "m-a-p/MERT-v1-95M"
    assert loaded.data.tags == ["audio", "music", "culturemert", "fairseq"]
    assert sections(loaded)["Conversion"] == "From `MERT-v1-95M_fairseq.pt`."


def test_pretraining_exports_carry_recipe_hours_steps_and_teacher(
    tiny_encoder_dir, tmp_path, one_thread
):
    base = with_card(tiny_encoder_dir, tmp_path / "mert")
    stages = [stage("heads", ["heads"], 1), stage("full", ["all"], 2)]
    raw = corpus_recipe(tmp_path, base, stages=stages)
    exported = loop.train(recipe_from_dict(raw), tmp_path / "run", progress=False)

    card = ModelCard.load(exported[1] / "README.md")
    assert card.data.license == LICENCE and card.data.library_name == "transformers"
    assert {"audio", "music", "culturemert", "continual-pretraining"} <= set(card.data.tags)
    parts = sections(card)
    assert raw["teacher"]["hash"] in parts["Teacher"]
    assert "3 updates over stages 0–1" in card.text  # 1 + 2
    assert "updates" in parts["Training"] and "| 1-full | all | 2 |" in parts["Training"]
    tracks = read_manifest(raw["data"]["manifests"][0])
    for tradition in ("lyra", "makam"):
        hours = sum(t.duration for t in tracks if t.tradition == tradition) / 3600
        row = f"| 1-full | {tradition} | {hours:.4g} | 2 |"
        assert row in parts["Data"], row
    assert "peak_lr: 0.002" in parts["Recipe"] and "name: full" in parts["Recipe"]
    assert "stage 0-heads" in ModelCard.load(exported[0] / "README.md").text


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-card")
    checkpoints = make_checkpoints(root)
    (checkpoints["base"] / "README.md").write_text(BASE_CARD)
    recipe = MergeRecipe(
        base=str(checkpoints["base"]), models=tuple(map(str, checkpoints["models"])), lam=0.2
    )
    return checkpoints, merge_checkpoints(recipe, root / "ta", progress=False)


def test_merge_card_metadata_recipe_and_input_hashes(merged):
    checkpoints, out = merged
    meta = metadata_load(out / "README.md")
    assert meta["license"] == LICENCE and meta["library_name"] == "transformers"
    assert {"audio", "music", "culturemert", "merge"} <= set(meta["tags"])
    parts = sections(ModelCard.load(out / "README.md"))
    assert "lambda: 0.2" in parts["Recipe"] and "method: task_arithmetic" in parts["Recipe"]
    files = [checkpoints["base"] / "model.safetensors"] + [
        next(m.glob("*.safetensors"), m / "pytorch_model.bin") for m in checkpoints["models"]
    ]
    for file in files:
        assert hashlib.sha256(file.read_bytes()).hexdigest() in parts["Inputs"]


def test_card_command_adds_the_papers_tables_and_keeps_the_making(merged, tmp_path):
    _, source = merged
    out = shutil.copytree(source, tmp_path / "ta")
    results = save_results(tmp_path / "run.json", constructed_results())
    for _ in range(2):  # a second run replaces the Evaluation section
        assert main(["card", str(out), "--results", str(results)]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == LICENCE and "merge" in card.data.tags
    parts = sections(card)
    assert {"Licence", "Recipe", "Inputs", "Evaluation", "Use"} <= set(parts)
    assert card.text.count("## Evaluation") == 1
    assert parts["Recipe"] == sections(ModelCard.load(source / "README.md"))["Recipe"]

    run = constructed_results()
    tables = {
        part.split("\n", 1)[0]: [line for line in part.splitlines() if line.startswith("|")]
        for part in parts["Evaluation"].split("### ")[1:]
    }
    titles = {"Turkish-makam": "makam", "Lyra": "lyra"}
    for title, metrics in (
        ("ROC-AUC / mAP (%)", ("roc_auc", "map")),
        ("Micro-F1 / Macro-F1 (%)", ("micro_f1", "macro_f1")),
    ):
        header, _, row = (line.strip("|").split("|") for line in tables[title])
        header, row = [h.strip() for h in header], [c.strip() for c in row]
        assert header == ["Model", "Turkish-makam", "Lyra", "Avg."] and row[0] == "my-encoder"
        for column, name in enumerate(header[1:3], start=1):
            values = [run["tasks"][titles[name]]["metrics"][m] for m in metrics]
            expected = " / ".join(f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}" for v in values)
            assert row[column] == expected
        means = [
            100 * run["tasks"][t]["metrics"][m]["mean"] for t in titles.values() for m in metrics
        ]
        assert row[-1] == f"{sum(means) / len(means):.1f}"


def test_card_command_sets_a_licence_and_writes_a_fresh_card(tiny_encoder_dir, tmp_path):
    folder = shutil.copytree(tiny_encoder_dir, tmp_path / "enc")
    code = main(["card", str(folder), "--license", "mit", "--set", "base_model=m-a-p/MERT-v1-95M"])
    assert code == 0
    meta = metadata_load(folder / "README.md")
    assert meta["license"] == "mit" and meta["base_model"] == "m-a-p/MERT-v1-95M"
    assert meta["library_name"] == "transformers"
    plain = shutil.copytree(tiny_encoder_dir, tmp_path / "plain")
    (plain / "README.md").write_text("# An encoder\n\nNotes kept as they are.\n")
    assert main(["card", str(plain)]) == 0
    card = ModelCard.load(plain / "README.md")
    assert card.data.library_name == "transformers" and "culturemert" in card.data.tags
    assert card.text.strip() == "# An encoder\n\nNotes kept as they are."
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["card", str(folder), "--results", str(tmp_path / "missing.json")])
    assert code == 2 and stderr.getvalue().count("\n") == 1 and "missing.json" in stderr.getvalue()
