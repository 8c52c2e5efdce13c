"""MERT's fairseq checkpoints (``MERT-v1-95M_fairseq.pt``, ``MERT-v1-330M_fairseq.pt``).

They hold the encoder with the pre-training heads that the Hugging Face conversion drops
(``final_proj``, ``label_embs_concat``, the CQT head ``encoder_cqt_model.fc``). The file is read
with torch's ``weights_only`` unpickler (config classes as inert stand-ins,
:mod:`culturemert.model.safe_pickle`); its model config (``cfg.model`` / ``cfg.task``, or the
older ``args``) becomes a HubertConfig, the encoder's tensors get their HuBERT names (the map
of MERT's ``convert_MERT_HF.py``), and the heads get the names of
:class:`culturemert.pretrain.objective.PretrainingHeads`.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from culturemert.atomic import atomic_directory
from culturemert.digests import sha256_file
from culturemert.model.card import EncoderCard, lineage
from culturemert.model.checkpoint import EncoderLoadError, Preprocessing, save_encoder
from culturemert.model.config import (
    UnsupportedCheckpointError,
    hubert_config_from_dict,
    mert_config_dict,
)
from culturemert.model.encoder import Encoder
from culturemert.model.finite import NonFiniteWeightsError, check_state_finite
from culturemert.model.heads import Heads, save_heads
from culturemert.model.safe_pickle import RefusedPickleError, load_with_stand_ins, plain

FAIRSEQ_SUFFIX = ".pt"
#: fairseq's Dictionary puts <s>, <pad>, </s>, <unk> before the symbols its file lists.
SPECIAL_SYMBOLS = 4
_DEFAULT_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"

# fairseq name → HuBERT name, after MERT's scripts/convert_MERT_HF.py. Layer names are the same
# for post-LN (95M) and pre-LN (330M, ``layer_norm_first``) encoders.
_ENCODER_NAMES = [
    (r"mask_emb", r"masked_spec_embed"),
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    # weight norm over dim 2: g is (1, 1, K), v is (C, C/groups, K), old or parametrized names
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)", r"encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)", r"encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.([qkv]|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]  # fmt: skip
_HEAD_NAMES = ("final_proj.weight", "final_proj.bias", "label_embs_concat")
_CQT_NAMES = {"encoder_cqt_model.fc.weight": "cqt.weight", "encoder_cqt_model.fc.bias": "cqt.bias"}
# The CQT head's fixed nnAudio kernels are buffers of the checkpoint; the teacher rebuilds them.
_IGNORED = re.compile(r"encoder_cqt_model\.spec_layer\.")
# Switches whose true value means a network HubertModel (or our objective) does not compute.
_ENCODER_SWITCHES = ("deepnorm", "subln", "feature_extractor_cqt", "do_cnn_feat_stable_layernorm")
_HEAD_SWITCHES = ("target_glu", "learnable_temp")


class FairseqCheckpointError(EncoderLoadError):
    """A fairseq checkpoint that cannot be read or mapped; the message names the file and field."""


@dataclass
class ConvertSettings:
    """What ``culturemert convert`` writes (``--set heads=false``: the encoder alone)."""

    heads: bool = True
    license: str | None = None  # MERT's fairseq releases are cc-by-nc-4.0; the .pt does not say
    base_model: str | None = None  # the Hub repo the .pt came from, e.g. m-a-p/MERT-v1-95M


@dataclass
class FairseqCheckpoint:
    """A fairseq checkpoint's encoder (a HubertModel with its preprocessing) and its heads."""

    encoder: Encoder
    heads: Heads | None


def is_fairseq_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a fairseq checkpoint file (``*.pt``)."""
    path = Path(path)
    return path.suffix == FAIRSEQ_SUFFIX and path.is_file()


def read_fairseq_checkpoint(path: str | os.PathLike, *, heads: bool = True) -> FairseqCheckpoint:
    """The encoder (and, with ``heads``, the pre-training heads) of a fairseq checkpoint."""
    from transformers import HubertModel

    path = Path(path)
    try:
        saved = load_with_stand_ins(path)
    except RefusedPickleError as error:
        raise FairseqCheckpointError(str(error)) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise FairseqCheckpointError(f"{path}: no 'model' state dict (not a fairseq checkpoint)")
    model_cfg, task_cfg, where = _configs(saved, path)
    state: dict[str, torch.Tensor] = saved["model"]
    for switch in _ENCODER_SWITCHES + (_HEAD_SWITCHES if heads else ()):
        if model_cfg.get(switch):
            raise FairseqCheckpointError(
                f"{path}: {where}.model.{switch} is true, which neither HubertModel nor MERT's "
                "released models use; this checkpoint is not supported"
            )
    config = _hubert_config(model_cfg, task_cfg, f"{path}: {where}")
    encoder_state, head_state, unknown = _split_state(state)
    if unknown:
        raise FairseqCheckpointError(
            f"{path}: tensors with no HuBERT or pre-training-head counterpart: {unknown[:8]}"
            + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        )
    try:
        check_state_finite(
            [(name, state[name]) for name in (*encoder_state, *head_state)], str(path)
        )
    except NonFiniteWeightsError as error:
        raise FairseqCheckpointError(str(error)) from None
    model = HubertModel(config)
    mapped = {hf: state[name] for name, hf in encoder_state.items()}
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise FairseqCheckpointError(
            f"{path}: the encoder's tensors do not match {where}.model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    preprocessing = Preprocessing(
        sample_rate=int(config.sample_rate),
        do_normalize=bool(task_cfg.get("normalize", False)),
    )
    found = None
    if heads and all(name in head_state for name in _HEAD_NAMES):
        found = _heads(state, model_cfg, task_cfg, config.hidden_size, path, where)
    return FairseqCheckpoint(Encoder(model.eval(), preprocessing), found)


def convert_fairseq_checkpoint(
    path: str | os.PathLike, out: str | os.PathLike, settings: ConvertSettings | None = None
) -> FairseqCheckpoint:
    """Write a fairseq checkpoint as a Hugging Face folder plus ``heads.safetensors``, atomically."""
    path, settings = Path(path), settings or ConvertSettings()
    checkpoint = read_fairseq_checkpoint(path, heads=settings.heads)
    config = checkpoint.encoder.module.config
    layout = "pre-LN" if config.do_stable_layer_norm else "post-LN"
    kept = "with its pre-training heads in `heads.safetensors`" if checkpoint.heads else "alone"
    card = EncoderCard(
        title=f"{path.stem} (converted from fairseq)",
        summary=f"A MERT-family encoder ({config.num_hidden_layers} layers × "
        f"{config.hidden_size}, {layout}) converted from a fairseq checkpoint, {kept}.",
        lineage=lineage(settings.base_model, license=settings.license),
        tags=("mert", "fairseq-conversion"),
        sections=(
            (
                "Conversion",
                f"`culturemert convert` read `{path.name}` (sha256 `{sha256_file(path)}`) with "
                "an allow-list unpickler and mapped its tensors to HuBERT's names.",
            ),
        ),
    )
    with atomic_directory(out) as staging:
        save_encoder(checkpoint.encoder, staging, card=card)  # replaces the staging folder whole
        if checkpoint.heads is not None:
            save_heads(checkpoint.heads, staging)
    return checkpoint


def _configs(saved: dict, path: Path) -> tuple[dict, dict, str]:
    """The model and task sections: ``cfg.model``/``cfg.task``, or the flat older ``args``."""
    cfg = plain(saved.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
        return _resolve(cfg["model"], cfg), _resolve(task, cfg), "cfg"
    args = plain(saved.get("args"))
    if isinstance(args, dict):
        return args, args, "args"
    raise FairseqCheckpointError(
        f"{path}: no model configuration (expected 'cfg' with a 'model' section, or 'args')"
    )


def _resolve(section: dict, root: dict) -> dict:
    """Replace omegaconf interpolations such as ``${task.label_rate}`` by the values they name."""
    resolved = {}
    for key, value in section.items():
        match = re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None
        if match:
            node: Any = root
            for part in match.group(1).split("."):
                node = node.get(part) if isinstance(node, dict) else None
            value = node
        resolved[key] = value
    return resolved


def _hubert_config(model: dict, task: dict, where: str):
    """The HubertConfig of a fairseq model section (fairseq's defaults for absent fields)."""
    checks = {
        "extractor_mode": "default",  # GroupNorm in the first conv only, as MERT-v1
        "layer_type": "transformer",
        "activation_fn": "gelu",
        "audio_extract_type": "w2v_conv",
        "pos_conv_depth": 1,
    }
    for field, expected in checks.items():
        if model.get(field, expected) != expected:
            raise FairseqCheckpointError(
                f"{where}.model.{field} is {model[field]!r}; only {expected!r} is supported"
            )
    layers = _conv_layers(model.get("conv_feature_layers", _DEFAULT_CONV_LAYERS), where)
    raw = mert_config_dict(
        hidden_size=int(model.get("encoder_embed_dim", 768)),
        num_hidden_layers=int(model.get("encoder_layers", 12)),
        num_attention_heads=int(model.get("encoder_attention_heads", 12)),
        intermediate_size=int(model.get("encoder_ffn_embed_dim", 3072)),
        conv_dim=tuple(dim for dim, _, _ in layers),
        num_conv_pos_embeddings=int(model.get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(model.get("conv_pos_groups", 16)),
        do_stable_layer_norm=bool(model.get("layer_norm_first", False)),
    )
    raw.update(
        conv_kernel=[kernel for _, kernel, _ in layers],
        conv_stride=[stride for _, _, stride in layers],
        num_feat_extract_layers=len(layers),
        conv_bias=bool(model.get("conv_bias", False)),
        hidden_dropout=float(model.get("dropout", 0.1)),
        attention_dropout=float(model.get("attention_dropout", 0.1)),
        activation_dropout=float(model.get("activation_dropout", 0.0)),
        layerdrop=float(model.get("encoder_layerdrop", 0.0)),
        feat_proj_dropout=float(model.get("dropout_input", 0.0)),
        sample_rate=int(task.get("sample_rate", 16000)),  # fairseq's HuBERT task default
    )
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise FairseqCheckpointError(
            f"{where}.model.encoder_embed_dim {raw['hidden_size']} is not a multiple of "
            f"encoder_attention_heads {raw['num_attention_heads']}"
        )
    try:
        return hubert_config_from_dict(raw, where=f"{where}.model")
    except UnsupportedCheckpointError as error:
        raise FairseqCheckpointError(str(error)) from None


def _conv_layers(text: str, where: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string (``[(512,10,5)] + [(512,3,2)] * 4 + …``),
    read as literal lists and tuples joined by ``+`` and ``*``: nothing is evaluated."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List):
            return [value(item) for item in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(value(item) for item in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            count = right if isinstance(left, (list, tuple)) else left
            if isinstance(node.op, ast.Mult) and not 0 <= count <= 64:  # no memory bombs
                raise ValueError(f"repeat count {count} out of range")
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unexpected {type(node).__name__}")

    try:
        layers = value(ast.parse(str(text), mode="eval").body)
        layers = [tuple(int(x) for x in layer) for layer in layers]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError("expected (dim, kernel, stride) triples")
    except (SyntaxError, ValueError, TypeError) as error:
        raise FairseqCheckpointError(
            f"{where}.model.conv_feature_layers {text!r}: expected a list of (dim, kernel, "
            f"stride) such as {_DEFAULT_CONV_LAYERS!r} ({error})"
        ) from None
    return layers


def _split_state(state: dict) -> tuple[dict[str, str], list[str], list[str]]:
    """Encoder tensors (fairseq → HuBERT name), head tensors, and names that fit neither."""
    encoder, heads, unknown = {}, [], []
    for name in state:
        if name in _HEAD_NAMES or name in _CQT_NAMES:
            heads.append(name)
        elif _IGNORED.match(name):
            continue
        else:
            for pattern, replacement in _ENCODER_NAMES:
                if re.fullmatch(pattern, name):
                    encoder[name] = re.sub(f"^{pattern}$", replacement, name)
                    break
            else:
                unknown.append(name)
    return encoder, heads, unknown


def _heads(state: dict, model: dict, task: dict, hidden: int, path: Path, where: str) -> Heads:
    """``final_proj``, ``label_embs_concat`` and the CQT head under PretrainingHeads' names."""
    final_dim = int(model.get("final_dim", 0)) or hidden
    weight, bias = state["final_proj.weight"], state["final_proj.bias"]
    labels = [str(label) for label in task.get("labels") or []]
    codebooks = len(labels) or weight.shape[0] // final_dim
    if weight.shape[0] == final_dim and codebooks > 1:
        # A tied projection (untie_final_proj false) is one Linear for every codebook; repeated
        # per codebook it gives the same logits through PretrainingHeads' chunked projection.
        weight, bias = weight.repeat(codebooks, 1), bias.repeat(codebooks)
    if weight.shape[0] != final_dim * codebooks:
        raise FairseqCheckpointError(
            f"{path}: final_proj has {weight.shape[0]} outputs, expected final_dim {final_dim} × "
            f"{codebooks} codebooks ({where}.task.labels)"
        )
    table = state["label_embs_concat"]
    rows, remainder = divmod(table.shape[0], codebooks)
    if remainder or rows <= SPECIAL_SYMBOLS or table.shape[1] != final_dim:
        raise FairseqCheckpointError(
            f"{path}: label_embs_concat {tuple(table.shape)} does not split into {codebooks} "
            f"equal dictionaries of {final_dim}-d rows with {SPECIAL_SYMBOLS} special symbols each"
        )
    # Each codebook's block follows its dictionary, dict.<label>.txt: <s>, <pad>, </s>, <unk>,
    # then the listed symbols. MERT's EnCodec dictionaries list "0" … "1023" in order, so code c
    # is row 4 + c. The four special rows are never a target (a code missing from the dict
    # becomes <unk>); they are dropped, so each codebook predicts exactly its codes and the
    # softmax runs over 1024 classes instead of fairseq's 1028.
    blocks = table.split(rows)
    tensors = {
        "projection.weight": weight.clone(),
        "projection.bias": bias.clone(),
        "label_embeddings": torch.cat([block[SPECIAL_SYMBOLS:] for block in blocks]).clone(),
    }
    cqt_bins = None
    if "encoder_cqt_model.fc.weight" in state:
        for name, ours in _CQT_NAMES.items():
            tensors[ours] = state[name].clone()
        cqt_bins = int(tensors["cqt.weight"].shape[0])
    return Heads(
        tensors=tensors,
        codebook_sizes=[rows - SPECIAL_SYMBOLS] * codebooks,
        final_dim=final_dim,
        cqt_bins=cqt_bins,
        logit_temp=float(model.get("logit_temp", 0.1)),
        labels=labels,
        source=path.name,
    )
