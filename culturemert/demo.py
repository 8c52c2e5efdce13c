"""The offline demo: build a tiny MERT-layout encoder, embed real recordings, and show the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import HubertModel

from culturemert.extract import ExtractSettings, collect_inputs, extract_corpus
from culturemert.model import hubert_config_from_dict, load_encoder, mert_config_dict, save_encoder

#: A narrow MERT-v1 look-alike: same front end and layout, 4 layers of 128 dims.
DEMO_ENCODER = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
    conv_dim=(128,) * 7,
    num_conv_pos_embeddings=32,
    num_conv_pos_embedding_groups=8,
)


def find_shared_audio() -> Path | None:
    """The shared recordings folder, looked for beside the working directory and the package."""
    here = Path(__file__).resolve().parents[1]
    for root in (Path.cwd(), here):
        for candidate in (root / "shared/data/audio", root.parent / "shared/data/audio"):
            if candidate.is_dir():
                return candidate
    return None


def build_demo_encoder(directory: Path, seed: int = 0) -> Path:
    """Save a seeded random encoder in Hugging Face layout (the same files as a real checkpoint)."""
    torch.manual_seed(seed)
    model = HubertModel(hubert_config_from_dict(mert_config_dict(**DEMO_ENCODER)))
    return save_encoder(model, directory)


def similarity_figure(names: list[str], features: list[np.ndarray], path: Path) -> Path:
    """Per-layer cosine similarity between tracks (track-mean embeddings), as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacked = np.stack([f.mean(axis=1) if f.ndim == 3 else f for f in features])  # [n, L, D]
    layers = stacked.shape[1]
    figure, axes = plt.subplots(1, layers, figsize=(3.2 * layers, 3.4), squeeze=False)
    for layer, axis in enumerate(axes[0]):
        vectors = stacked[:, layer] - stacked[:, layer].mean(axis=0)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        axis.imshow(vectors @ vectors.T, vmin=-1, vmax=1, cmap="RdBu_r")
        axis.set_title(f"layer {layer}")
        axis.set_xticks([])
        axis.set_yticks(range(len(names)), names if layer == 0 else [""] * len(names), fontsize=7)
    figure.suptitle("Cosine similarity of track embeddings (centred), per layer")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_demo(out: Path, audio: Path, seed: int = 0, progress: bool = True) -> dict:
    """Embed ``audio`` with a seeded tiny encoder into ``out``; returns paths and a summary table."""
    out.mkdir(parents=True, exist_ok=True)
    encoder_dir = out / "encoder"
    if not (encoder_dir / "model.safetensors").is_file():
        build_demo_encoder(encoder_dir, seed)
    encoder = load_encoder(encoder_dir)
    items = collect_inputs(audio)
    settings = ExtractSettings(model=str(encoder_dir), window_seconds=5.0)
    report = extract_corpus(
        encoder, items, out / "features", settings=settings, num_workers=1, progress=progress
    )
    names, features, rows = [], [], []
    for track_id, path in items:
        file = out / "features" / "features" / f"{track_id}.npy"
        if file.is_file():
            array = np.load(file)
            names.append(track_id)
            features.append(array)
            rows.append((track_id, path.suffix[1:], array.shape[1], float(np.linalg.norm(array))))
    figure = similarity_figure(names, features, out / "similarity.png")
    return {"report": report, "rows": rows, "figure": figure, "encoder": encoder_dir}
