"""fairseq checkpoints: read without running code, mapped to HuBERT and to our pre-training heads.

The checkpoints are built here as fairseq writes them (``model``, ``cfg`` or ``args``,
``optimizer_history``, ``extra_state``, ...), their configs pickled under omegaconf's and
fairseq's class names by a pickler that writes those names without importing either package.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import random_state_dict, reference_hubert_config, tiny_mert_config, write_checkpoint
from huggingface_hub import ModelCard
from pretrain_corpus import ToneTeacher, corpus_recipe, stage
from safetensors import safe_open
from safetensors.torch import load_file
from test_objective import reference_terms
from transformers import HubertModel

from culturemert.cli import main
from culturemert.manifest import read_manifest
from culturemert.model import load_encoder
from culturemert.model.fairseq import convert_fairseq_checkpoint
from culturemert.model.safe_pickle import may_stand_in
from culturemert.pretrain import loop
from culturemert.pretrain.objective import PretrainingObjective
from culturemert.pretrain.recipe import recipe_from_dict
from culturemert.pretrain.warm_start import HeadsMismatchError
from culturemert.teachers import teacher_hash
from culturemert.teachers.targets import compute_targets

pytestmark = pytest.mark.usefixtures("one_thread")

FINAL_DIM, SYMBOLS, CODEBOOKS, BINS = 8, 8, 2, 84
SPECIALS = 4  # fairseq's Dictionary: <s>, <pad>, </s>, <unk>, then the file's symbols

# mert-model-and-objective.md §3.4 (MERT's convert_MERT_HF.py), written out from the HuBERT side.
HF_TO_FAIRSEQ = [
    (r"masked_spec_embed", r"mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d)\.conv\.weight", r"feature_extractor.conv_layers.\1.0.weight"),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.0.2.\1"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", r"encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", r"encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.0.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d)\.attention\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]  # fmt: skip


def fairseq_name(name: str) -> str:
    matches = [re.sub(f"^{a}$", b, name) for a, b in HF_TO_FAIRSEQ if re.fullmatch(a, name)]
    assert len(matches) == 1, name
    return matches[0]


# Classes pickled under another package's names: the file names omegaconf and fairseq classes
# exactly as fairseq's own checkpoints do.
class Foreign:
    pickled_as = ""


def foreign(name: str) -> type:
    return type(name.rsplit(".", 1)[1], (Foreign,), {"pickled_as": name})


DictConfig = foreign("omegaconf.dictconfig.DictConfig")
ListConfig = foreign("omegaconf.listconfig.ListConfig")
AnyNode = foreign("omegaconf.nodes.AnyNode")
ContainerMetadata = foreign("omegaconf.base.ContainerMetadata")
FairseqConfig = foreign("fairseq.dataclass.configs.FairseqConfig")


class Choice(Foreign):
    """A fairseq ChoiceEnum member: pickled as a call of its class with its value."""

    pickled_as = "fairseq.dataclass.constants.Choices"

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return type(self), (self.value,)


class ForeignPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_global(self, obj, name=None):
        if isinstance(obj, type) and issubclass(obj, Foreign):
            module, _, qualname = obj.pickled_as.rpartition(".")
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


FOREIGN_PICKLE = types.SimpleNamespace(Pickler=ForeignPickler, __name__="pickle")


def metadata(object_type) -> ContainerMetadata:
    meta = ContainerMetadata()
    meta.__dict__.update(ref_type=typing.Any, object_type=object_type, key_type=str, flags={})
    return meta


def omegaconf_tree(value, parent=None):
    """Plain data as omegaconf pickles it: containers with ``_content``, nodes with ``_val``."""
    if isinstance(value, dict):
        node = DictConfig()
        content = {key: omegaconf_tree(item, node) for key, item in value.items()}
    elif isinstance(value, list):
        node = ListConfig()
        content = [omegaconf_tree(item, node) for item in value]
    else:
        node = AnyNode()
        node.__dict__.update(_val=value, _parent=parent, _metadata=metadata(None))
        return node
    meta = metadata(FairseqConfig if isinstance(value, dict) else list)
    node.__dict__.update(_metadata=meta, _parent=parent, _content=content)
    return node


def model_section(raw: dict, pre_ln: bool, dropout: float) -> dict:
    dim = raw["conv_dim"][0]
    return {
        "_name": "mert",
        "label_rate": "${task.label_rate}",
        "extractor_mode": Choice("default"),
        "encoder_layers": raw["num_hidden_layers"],
        "encoder_embed_dim": raw["hidden_size"],
        "encoder_ffn_embed_dim": raw["intermediate_size"],
        "encoder_attention_heads": raw["num_attention_heads"],
        "activation_fn": Choice("gelu"),
        "layer_type": Choice("transformer"),
        "conv_feature_layers": f"[({dim},10,5)] + [({dim},3,2)] * 4 + [({dim},2,2)] * 2",
        "conv_bias": False,
        "conv_pos": raw["num_conv_pos_embeddings"],
        "conv_pos_groups": raw["num_conv_pos_embedding_groups"],
        "layer_norm_first": pre_ln,
        "final_dim": FINAL_DIM,
        "untie_final_proj": True,
        "logit_temp": 0.1,
        "audio_cqt_loss_m": True,
        "audio_cqt_bins": BINS,
        "dropout": dropout,
        "attention_dropout": dropout,
        "activation_dropout": 0.0,
        "encoder_layerdrop": dropout,
        "dropout_input": dropout,
        "feature_grad_mult": 0.1,
        "deepnorm": False,
        "attention_relax": 32.0 if pre_ln else -1.0,
    }


def write_fairseq_checkpoint(
    path: Path, *, pre_ln=False, style="cfg", dropout=0.1, poison=None, model_extra=None
):
    """A tiny MERT fairseq checkpoint; returns its encoder's HuBERT-named weights and the heads
    our conversion must produce (written out here from the fairseq tensors)."""
    raw = tiny_mert_config(do_stable_layer_norm=pre_ln)
    encoder = random_state_dict(raw, seed=3)
    generator = torch.Generator().manual_seed(4)
    hidden = raw["hidden_size"]
    state = {fairseq_name(name): tensor for name, tensor in encoder.items()}
    state["final_proj.weight"] = torch.randn(FINAL_DIM * CODEBOOKS, hidden, generator=generator)
    state["final_proj.bias"] = torch.randn(FINAL_DIM * CODEBOOKS, generator=generator)
    state["label_embs_concat"] = torch.rand(
        CODEBOOKS * (SPECIALS + SYMBOLS), FINAL_DIM, generator=generator
    )
    state["encoder_cqt_model.fc.weight"] = torch.randn(BINS, hidden, generator=generator) / 10
    state["encoder_cqt_model.fc.bias"] = torch.randn(BINS, generator=generator) / 10
    state["encoder_cqt_model.spec_layer.cqt_kernels_real"] = torch.randn(BINS, 1, 64)
    if poison:
        state[poison] = state[poison].clone()
        state[poison].view(-1)[0] = float("nan")
    model = {**model_section(raw, pre_ln, dropout), **(model_extra or {})}
    labels = [f"encodec_{k}" for k in range(CODEBOOKS)]
    task = {"_name": "mert_pretraining", "sample_rate": 24000, "label_rate": 75}
    task.update(labels=labels, normalize=False, label_dir="/data/labels")
    sections = {
        "common": {"fp16": True, "seed": 1337},
        "model": model,
        "task": task,
        "criterion": {"_name": "hubert", "loss_weights": [10, 1]},
    }
    saved = {
        "args": None,
        "cfg": omegaconf_tree(sections),
        "model": state,
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "HubertCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 400000,
            }  # fmt: skip
        ],
        "task_state": {},
        "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3, "iterations_in_epoch": 7}},
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": []},
    }
    if style == "args":  # older fairseq: one flat argparse.Namespace for model and task
        saved["cfg"] = None
        saved["args"] = argparse.Namespace(**{**model, "label_rate": 75, **task})
    torch.save(saved, path, pickle_module=FOREIGN_PICKLE)
    blocks = state["label_embs_concat"].split(SPECIALS + SYMBOLS)
    heads = {
        "projection.weight": state["final_proj.weight"],
        "projection.bias": state["final_proj.bias"],
        # code c of codebook k is dictionary row 4 + c of block k
        "label_embeddings": torch.cat([block[SPECIALS:] for block in blocks]),
        "cqt.weight": state["encoder_cqt_model.fc.weight"],
        "cqt.bias": state["encoder_cqt_model.fc.bias"],
    }
    return raw, encoder, heads


def reference_model(raw: dict, state: dict) -> HubertModel:
    config = reference_hubert_config(raw)
    config._attn_implementation = "eager"
    model = HubertModel(config)
    model.load_state_dict(state)
    return model.eval()


def hidden_states(model: HubertModel, audio: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(audio, output_hidden_states=True).hidden_states)


@pytest.mark.parametrize(
    ("pre_ln", "style"),
    [(False, "cfg"), (True, "cfg"), (False, "args")],
    ids=["95M", "330M", "args"],
)
def test_convert_gives_the_same_encoder_and_heads(tmp_path, pre_ln, style, capsys):
    source = tmp_path / "MERT_fairseq.pt"
    raw, weights, heads = write_fairseq_checkpoint(source, pre_ln=pre_ln, style=style)
    out = tmp_path / "converted"
    assert main(["convert", str(source), "--out", str(out)]) == 0
    assert "2 codebooks × 8 codes" in capsys.readouterr().out

    audio = torch.randn(2, 6000, generator=torch.Generator().manual_seed(1))
    expected = hidden_states(reference_model(raw, weights), audio)
    ours = load_encoder(out, attn_implementation="eager")
    plain = HubertModel.from_pretrained(out, attn_implementation="eager").eval()
    assert ours.config.do_stable_layer_norm is pre_ln
    for model in (ours, plain):
        got = hidden_states(model, audio)
        assert len(got) == raw["num_hidden_layers"] + 1
        for a, b in zip(got, expected, strict=True):
            assert (a - b).abs().max() <= 1e-6
    assert torch.equal(ours.masked_spec_embed, weights["masked_spec_embed"])

    stored = load_file(out / "heads.safetensors")
    assert set(stored) == set(heads)
    assert all(torch.equal(stored[name], heads[name]) for name in heads)
    with safe_open(out / "heads.safetensors", framework="pt") as handle:
        facts = handle.metadata()
    assert facts["codebook_sizes"] == "[8, 8]" and facts["cqt_bins"] == "84"
    assert facts["labels"] == '["encodec_0", "encodec_1"]'


def test_the_converted_folder_has_a_hub_card_naming_its_source(tmp_path):
    source = tmp_path / "MERT-v1-95M_fairseq.pt"
    write_fairseq_checkpoint(source)
    out = tmp_path / "converted"
    flags = ["--license", "cc-by-nc-4.0", "--base-model", "m-a-p/MERT-v1-95M"]
    assert main(["convert", str(source), "--out", str(out), *flags]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "cc-by-nc-4.0"
    assert card.data.base_model == "m-a-p/MERT-v1-95M"
    assert card.data.library_name == "transformers"
    assert hashlib.sha256(source.read_bytes()).hexdigest() in card.text


def test_a_pickled_call_is_refused_by_name_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    source = tmp_path / "evil.pt"
    torch.save({"cfg": Payload(), "model": {}}, source)
    out = tmp_path / "out"
    assert main(["convert", str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert f"refused to load global '{os.system.__module__}.system'" in error
    assert str(source) in error
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    ("name", "inert"),
    [
        ("omegaconf.dictconfig.DictConfig", True),
        ("fairseq.dataclass.configs.FairseqConfig", True),
        ("my_user_dir.tasks.mert_pretraining.MERTPretrainingConfig", True),
        ("argparse.Namespace", True),
        ("typing.Any", True),
        ("posix.system", False),
        ("builtins.eval", False),
        ("subprocess.Popen", False),
        ("torch.nn.modules.linear.Linear", False),
    ],
)
def test_only_config_classes_load_as_stand_ins(name, inert):
    assert may_stand_in(name) is inert


def test_extract_refuses_a_pickled_call_in_pytorch_model_bin(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    raw = tiny_mert_config()
    model_dir = write_checkpoint(tmp_path / "model", raw, random_state_dict(raw), fmt="bin")
    torch.save({"weights": Payload()}, model_dir / "pytorch_model.bin")
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", np.zeros(24000, dtype=np.float32), 24000)
    out = tmp_path / "features"
    assert main(["extract", str(model_dir), str(tmp_path / "audio"), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0, error
    assert "pytorch_model.bin: refused to load global" in error
    assert f"'{os.system.__module__}.system'" in error
    assert not marker.exists() and not (out / "index.jsonl").exists()


@pytest.mark.parametrize(
    ("poison", "extra", "message"),
    [
        ("encoder.layers.0.fc1.weight", None, r"tensor 'encoder\.layers\.0\.fc1\.weight' holds 1 NaN"),
        ("label_embs_concat", None, r"tensor 'label_embs_concat' holds 1 NaN"),
        (None, {"deepnorm": True}, r"cfg\.model\.deepnorm is true"),
        (None, {"conv_feature_layers": "__import__('os').getcwd()"}, r"conv_feature_layers"),
    ],
    ids=["nan-encoder", "nan-heads", "deepnorm", "code-in-config"],
)  # fmt: skip
def test_unusable_checkpoints_are_refused(tmp_path, capsys, poison, extra, message):
    source = tmp_path / "bad.pt"
    write_fairseq_checkpoint(source, poison=poison, model_extra=extra)
    out = tmp_path / "out"
    assert main(["convert", str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and re.search(message, error), error
    assert not out.exists()


class EvenToneTeacher(ToneTeacher):
    """The tone teacher with both codebooks of the heads' size (8 codes each)."""

    name = "tone-test-even"
    codebook_sizes = [SYMBOLS] * CODEBOOKS
    hash = teacher_hash("tone-test-even", {"sizes": codebook_sizes})


def test_pretraining_starts_from_the_converted_heads(tmp_path, monkeypatch):
    source = tmp_path / "MERT_fairseq.pt"
    # no dropout or layerdrop: the training-mode forward is the written-out eval forward
    raw, weights, heads = write_fairseq_checkpoint(source, dropout=0.0)
    converted = tmp_path / "converted"
    convert_fairseq_checkpoint(source, converted)
    recipe = corpus_recipe(tmp_path, converted, stages=[stage("full", ["all"], 1)])
    manifest = Path(recipe["data"]["manifests"][0])
    targets = tmp_path / "even-targets"
    compute_targets(
        EvenToneTeacher(), read_manifest(manifest), manifest.parent, targets, progress=False
    )
    recipe["teacher"] = {"targets": str(targets), "hash": EvenToneTeacher.hash}
    recipe["objective"] = {
        "codebook_sizes": EvenToneTeacher.codebook_sizes,
        "final_dim": FINAL_DIM,
        "cqt_bins": BINS,
        "noise_prob": 0.0,
    }
    forward, calls = PretrainingObjective.forward, []

    def recording(self, waveforms, codes, **kwargs):
        output = forward(self, waveforms, codes, **kwargs)
        calls.append((waveforms.clone(), codes.clone(), output))
        return output

    monkeypatch.setattr(PretrainingObjective, "forward", recording)
    loop.train(recipe_from_dict(recipe), tmp_path / "run", progress=False)

    waveforms, codes, output = calls[0]
    tables = heads["label_embeddings"].split(SYMBOLS)

    def linear(name):
        return lambda x: x @ heads[f"{name}.weight"].T + heads[f"{name}.bias"]

    terms = reference_terms(
        reference_model(raw, weights),
        linear("projection"),
        tables,
        linear("cqt"),
        waveforms,
        codes,
        output.mask,
    )
    for name, value in terms.items():
        assert output.terms[name].item() == pytest.approx(value, rel=1e-5), name
    expected = terms["acoustic"] + terms["cqt"] + 10 * terms["feature_penalty"]
    assert output.loss.item() == pytest.approx(expected, rel=1e-5)


def test_a_teacher_of_other_codebook_sizes_is_refused_before_training(tmp_path):
    source = tmp_path / "MERT_fairseq.pt"
    write_fairseq_checkpoint(source)
    recipe = corpus_recipe(tmp_path, source, stages=[stage("full", ["all"], 1)])
    recipe["objective"]["final_dim"] = FINAL_DIM
    with pytest.raises(HeadsMismatchError, match=r"codebooks of sizes 2 × 8.*\[8, 4\]"):
        loop.train(recipe_from_dict(recipe), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_pretrain_check_refuses_heads_that_do_not_fit(tmp_path, tiny_encoder_dir, capsys):
    source = tmp_path / "MERT_fairseq.pt"
    write_fairseq_checkpoint(source)
    recipe = corpus_recipe(tmp_path, source, stages=[stage("full", ["all"], 1)])
    recipe["objective"]["final_dim"] = FINAL_DIM
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(recipe))
    assert main(["pretrain", str(file), "--check"]) == 1
    assert re.search(r"codebooks of sizes 2 × 8.*\[8, 4\]", capsys.readouterr().err)
    recipe["init"] = str(tiny_encoder_dir)  # no stored heads: new ones, nothing to refuse
    file.write_text(yaml.safe_dump(recipe))
    assert main(["pretrain", str(file), "--check"]) == 0
    assert f"init: {tiny_encoder_dir} loads" in capsys.readouterr().out
