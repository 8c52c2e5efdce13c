"""Hand-made features in an encoder's place: same embedding, caching and probing path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from culturemert.cli import main
from culturemert.embedding import embed
from culturemert.evaluate.handcrafted import handcrafted_features, is_handcrafted
from culturemert.evaluate.harness import evaluate_encoder, task_datasets
from culturemert.evaluate.results import load_results
from culturemert.evaluate.settings import EvaluationConfig, ProbeSettings, SelectionConfig
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


@pytest.fixture(scope="module")
def pitch_classes(tmp_path_factory):
    """C and F♯ tones in three octaves: only the pitch class decides the tag."""
    root = tmp_path_factory.mktemp("pitch")
    rng = np.random.default_rng(1)
    (root / "generic").mkdir()
    rows = []
    for i in range(36):
        pitch_class = "F#" if i % 2 else "C"
        hz = (369.99 if i % 2 else 261.63) * 2.0 ** ((i // 2) % 3 - 1)
        sf.write(root / "generic" / f"{i}.wav", tone(hz, 0.5, rng), 24000)
        split = "train" if i < 20 else "valid" if i < 28 else "test"
        rows.append(
            {
                "track_id": str(i),
                "path": f"{i}.wav",
                "tags": [f"key--{pitch_class}"],
                "split": split,
            }
        )
    (root / "generic" / "manifest.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    return root


def test_chroma_probes_tell_pitch_classes_apart(pitch_classes, tmp_path):
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
    results = evaluate_encoder(
        features, task_datasets(["generic"], pitch_classes), config, progress=False
    )
    assert results["model"] == "features:chroma"
    assert results["tasks"]["generic"]["metrics"]["roc_auc"]["mean"] == 1.0
    assert results["config"]["extraction"]["normalize"] is False


def test_cli_evaluates_hand_made_features_on_cut_audio(pitch_classes, tmp_path, capsys):
    out = tmp_path / "results.json"
    options = ["--tasks", "generic", "--data-root", str(pitch_classes), "--out", str(out)]
    options += ["--cache", str(tmp_path), "--seeds", "1", "--probes", "linear", "--lrs", "1e-2"]
    options += ["--max-epochs", "2", "--window-seconds", "0", "--quiet"]
    assert main(["evaluate", "features:chroma", *options, "--max-seconds", "generic=0.25"]) == 0
    results = load_results(out)
    assert results["model"] == "features:chroma"
    assert results["config"]["max_seconds"] == {"generic": 0.25}
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["evaluate", "features:chroma", *options, "--max-seconds", "generic"])
    assert "expected TASK=SECONDS" in capsys.readouterr().err
