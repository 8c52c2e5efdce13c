"""Loading and saving encoders in Hugging Face layout, without remote code."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from culturemert.atomic import atomic_directory
from culturemert.frames import SAMPLE_RATE
from culturemert.model.config import hubert_config_from_dict

if TYPE_CHECKING:  # the modeling code is slow to import; tools that never build a model skip it
    from transformers import HubertModel

    from culturemert.model.card import EncoderCard
    from culturemert.model.encoder import Encoder

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# README.md: the card whose licence the encoders made from this one inherit.
_HUB_PATTERNS = ["*.safetensors", "*.json", "*.bin", "README.md"]


class EncoderLoadError(OSError):
    """An encoder source that cannot be resolved or read; the message says what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """What a checkpoint expects of its input waveform (from ``preprocessor_config.json``)."""

    sample_rate: int = SAMPLE_RATE
    do_normalize: bool = False

    def to_hf_dict(self) -> dict:
        """The ``preprocessor_config.json`` content transformers' Wav2Vec2FeatureExtractor reads."""
        return {
            "do_normalize": self.do_normalize,
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "feature_size": 1,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": True,
            "sampling_rate": self.sample_rate,
        }


def resolve_source(source: str | os.PathLike) -> Path:
    """A local directory for ``source``: itself if it exists, else a Hub download (when online)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    if hub_id(source) is None:
        raise EncoderLoadError(f"{text}: no such directory (expected a Hugging Face-layout folder)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # offline, unknown repo, gated repo: all end the same way
        raise EncoderLoadError(
            f"{text}: could not fetch this model from the Hugging Face Hub ({type(error).__name__}: "
            f"{error}). If you are offline, download it elsewhere (e.g. `hf download {text} "
            "--local-dir DIR`), copy DIR here, and pass DIR instead of the hub id."
        ) from error


def hub_id(source: str | os.PathLike) -> str | None:
    """``source`` as a Hub repository id (``org/name``) when it names no local path, else None."""
    text = str(source)
    if Path(text).expanduser().exists():
        return None
    return text if text.count("/") == 1 and not text.startswith((".", "/", "~")) else None


def read_preprocessing(
    directory: str | os.PathLike, default_rate: int = SAMPLE_RATE
) -> Preprocessing:
    """The checkpoint's sample rate and ``do_normalize`` flag (defaults when the file is absent)."""
    file = Path(directory) / "preprocessor_config.json"
    if not file.is_file():
        return Preprocessing(sample_rate=default_rate)
    raw = json.loads(file.read_text())
    return Preprocessing(
        sample_rate=int(raw.get("sampling_rate", default_rate)),
        do_normalize=bool(raw.get("do_normalize", False)),
    )


def load_encoder(
    source: str | os.PathLike,
    *,
    attn_implementation: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> HubertModel:
    """Load a MERT/HuBERT-family encoder as a ``transformers.HubertModel`` in eval mode.

    ``source`` is a Hugging Face-layout directory or a hub id. MERT's remote-code configs are
    mapped onto HubertConfig; weights come from ``model.safetensors`` or from ``pytorch_model.bin``
    read with ``weights_only=True`` (old ``weight_g``/``weight_v`` names included). The model
    with its preprocessing is :func:`culturemert.model.open_encoder`.
    """
    from transformers import HubertModel

    directory = resolve_source(source)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise EncoderLoadError(f"{directory}: no config.json (not a Hugging Face-layout model)")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise EncoderLoadError(
            f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})"
        )
    config = hubert_config_from_dict(json.loads(config_file.read_text()), where=str(config_file))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    _check_pickled_weights(directory)
    try:
        model, info = HubertModel.from_pretrained(
            directory,
            config=config,
            attn_implementation=attn_implementation,
            dtype=dtype or torch.float32,
            weights_only=True,
            local_files_only=True,
            output_loading_info=True,
        )
    except pickle.UnpicklingError as error:  # torch's weights_only refusal, as one line
        from culturemert.model.safe_pickle import first_reason

        raise EncoderLoadError(f"{directory}: weights refused: {first_reason(error)}") from None
    # masked_spec_embed only matters for pre-training; every other tensor must be present.
    missing = sorted(k for k in info["missing_keys"] if k != "masked_spec_embed")
    problems = missing + sorted(info["unexpected_keys"]) + [str(m) for m in info["mismatched_keys"]]
    if problems:
        raise EncoderLoadError(
            f"{directory}: weights do not match the config: missing {missing}, "
            f"unexpected {sorted(info['unexpected_keys'])}, "
            f"mismatched {sorted(info['mismatched_keys'])}"
        )
    if device is not None:
        model.to(device)
    return model.eval()


def _check_pickled_weights(directory: Path) -> None:
    """Refuse a ``pytorch_model.bin`` naming any global beyond tensors before it is unpickled
    (``weights_only`` refuses it too, but with a traceback rather than the global's name)."""
    if any((directory / name).is_file() for name in WEIGHT_FILES[:2]):
        return  # transformers reads the safetensors weights
    weights = directory / "pytorch_model.bin"
    from culturemert.model.safe_pickle import RefusedPickleError, check_weights_only

    try:
        check_weights_only(weights)
    except RefusedPickleError as error:
        raise EncoderLoadError(str(error)) from None


def save_encoder(
    model: HubertModel | Encoder,
    directory: str | os.PathLike,
    *,
    preprocessing: Preprocessing | None = None,
    card: EncoderCard | None = None,
    allow_non_finite: bool = False,
) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and a
    ``README.md`` model card atomically.

    ``preprocessing`` defaults to an :class:`Encoder`'s own, else to the config's sample rate
    without normalisation. ``card`` says what the caller knows (lineage, licence, how the
    weights were made); without it the card states only what the weights are. Tensors holding
    NaN or infinity are refused before anything is written, unless ``allow_non_finite``
    (then each is logged). The result loads with :func:`load_encoder` and with plain
    ``HubertModel.from_pretrained``.
    """
    directory = Path(directory)
    from culturemert.model.card import write_card  # it builds on this module
    from culturemert.model.encoder import Encoder
    from culturemert.model.finite import check_state_finite

    if isinstance(model, Encoder):
        model, preprocessing = model.module, preprocessing or model.preprocessing
    if preprocessing is None:
        preprocessing = Preprocessing(int(getattr(model.config, "sample_rate", SAMPLE_RATE)))
    check_state_finite(
        model.state_dict().items(),
        f"model to save as {directory}",
        allow=allow_non_finite,
        hint=" (allow_non_finite=True writes them anyway)",
    )
    with atomic_directory(directory) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        config_file = staging / "config.json"
        config = json.loads(config_file.read_text())
        config["architectures"] = ["HubertModel"]
        config["sample_rate"] = preprocessing.sample_rate
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (staging / "preprocessor_config.json").write_text(
            json.dumps(preprocessing.to_hf_dict(), indent=2) + "\n"
        )
        write_card(staging, card or _default_card(model))
    return directory


def _default_card(model: HubertModel) -> EncoderCard:
    """A card for weights saved without one: the licence of the folder they were loaded from."""
    from culturemert.model.card import EncoderCard, lineage

    origin = getattr(model, "name_or_path", "")
    return EncoderCard(lineage=lineage(origin if origin and Path(origin).is_dir() else None))
