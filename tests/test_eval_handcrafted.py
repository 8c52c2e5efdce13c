"""Hand-made features in an encoder's place: same embedding, caching and probing path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from culturemert.embedding import embed
from culturemert.evaluate.handcrafted import handcrafted_features, is_handcrafted
from culturemert.evaluate.harness import EvaluationConfig, evaluate_encoder
from culturemert.evaluate.probes import ProbeSettings
from culturemert.evaluate.selection import SelectionConfig
from culturemert.teachers.features import frame_features

pytestmark = pytest.mark.usefixtures("one_thread")


def tone(hz: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def test_embedding_is_the_mean_of_the_frame_features():
    wave = tone(440.0, 0.7, np.random.default_rng(0))
    features = handcrafted_features("features:mfcc+chroma")
    expected = frame_features(wave, "mfcc+chroma")
    pooled = embed(features, wave, pool="mean+std")
    assert pooled.shape == (1, 2 * expected.shape[1])
    np.testing.assert_allclose(pooled[0], np.r_[expected.mean(0), expected.std(0)], rtol=1e-5)
    assert is_handcrafted("features:chroma") and not is_handcrafted("runs/demo/base")


def test_unknown_kinds_are_named():
    with pytest.raises(ValueError, match="unknown feature kind 'mfc'.*mfcc, logmel, chroma"):
        handcrafted_features("features:mfc+chroma")


def test_chroma_probes_tell_pitch_classes_apart(tmp_path):
    """C and F♯ tones in three octaves: only the pitch class decides the tag."""
    rng = np.random.default_rng(1)
    (tmp_path / "generic").mkdir()
    rows = []
    for i in range(36):
        pitch_class = "F#" if i % 2 else "C"
        hz = (369.99 if i % 2 else 261.63) * 2.0 ** ((i // 2) % 3 - 1)
        sf.write(tmp_path / "generic" / f"{i}.wav", tone(hz, 0.5, rng), 24000)
        split = "train" if i < 20 else "valid" if i < 28 else "test"
        rows.append(
            {
                "track_id": str(i),
                "path": f"{i}.wav",
                "tags": [f"key--{pitch_class}"],
                "split": split,
            }
        )
    (tmp_path / "generic" / "manifest.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    config = EvaluationConfig(
        window_seconds=None,
        selection=SelectionConfig(
            kinds=("linear",),
            learning_rates=(1e-2,),
            seeds=2,
            probe=ProbeSettings(max_epochs=30, patience=30),
        ),
        cache_dir=str(tmp_path / "cache"),
    )
    features = handcrafted_features("features:chroma")
    results = evaluate_encoder(features, ["generic"], tmp_path, config, progress=False)
    assert results["tasks"]["generic"]["metrics"]["roc_auc"]["mean"] == 1.0
    assert results["config"]["extraction"]["normalize"] is False
