"""The HEAR API: HEAR's own validator, and embeddings against plain HubertModel forwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch

import culturemert.hear as hear
from culturemert.model import load_encoder
from culturemert.resampling import resample


@pytest.fixture(scope="module")
def model(tiny_encoder_dir):
    return hear.load_model(str(tiny_encoder_dir), window_seconds=30.0)


@pytest.fixture(scope="module")
def reference(tiny_encoder_dir):
    return load_encoder(tiny_encoder_dir, attn_implementation="eager")


def hidden(reference, waveform: np.ndarray) -> np.ndarray:
    """``[layers, frames, dims]`` of one plain forward pass."""
    with torch.no_grad():
        states = reference(torch.from_numpy(waveform)[None], output_hidden_states=True)
    return torch.stack(states.hidden_states)[:, 0].numpy()


def sounds(n: int, seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    """``[n, samples]`` of band-limited noise in [-1, 1] (a sum of low sines)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    rows = [
        sum(np.sin(2 * np.pi * f * t + p) for f, p in rng.uniform([50, 0], [8000, 6], (12, 2)))
        for _ in range(n)
    ]
    return torch.from_numpy(np.stack(rows) / 12).float()


def test_hear_validator_passes(tiny_encoder_dir, tmp_path):
    """hear-validator itself, run as its console script would; a stub stands in for the
    TensorFlow it imports but does not use for torch models (installing it is gigabytes)."""
    if not os.environ.get("CI"):
        pytest.importorskip("hearvalidator", reason="scripts/bootstrap.sh installs it")
    stub = tmp_path / "stub" / "tensorflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("class Module:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub.parent), *sys.path])}
    run = subprocess.run(
        [sys.executable, "-c", "from hearvalidator.validate import main; main()"]
        + ["culturemert.hear", "-m", str(tiny_encoder_dir), "-d", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Looks good!" in run.stdout
    assert "Interval between timestamps is 13.33" in run.stdout


def test_frames_equal_one_forward_of_the_soxr_resampled_sound(model, reference):
    audio = sounds(2, 1.5, 48000, seed=1)
    embeddings, times = hear.get_timestamp_embeddings(audio, model)
    for row in range(2):
        at_24k = soxr.resample(audio[row].numpy(), 48000, 24000, quality="HQ")
        expected = hidden(reference, at_24k)  # [3, frames, 32]
        frames = expected.shape[1]
        assert frames == (36000 - 400) // 320 + 1
        # All layers side by side, in order: layer l holds dims [32 l, 32 (l + 1)).
        np.testing.assert_allclose(
            embeddings[row].numpy(),
            expected.transpose(1, 0, 2).reshape(frames, 96),
            # The torch resampler is within 1e-4 of soxr away from the ends (test_resampling.py);
            # the two filters see different lengths of zeros beyond them.
            atol=1e-3,
        )
    centres_ms = (np.arange(embeddings.shape[1]) * 320 + 200) / 24000 * 1000
    assert times.shape == (2, embeddings.shape[1]) and times.dtype == torch.float32
    np.testing.assert_allclose(times.numpy(), np.tile(centres_ms, (2, 1)), rtol=1e-6)
    assert embeddings.dtype == torch.float32 and embeddings.shape[2] == model.scene_embedding_size


def test_scene_embedding_is_the_mean_frame(model, reference):
    audio = sounds(3, 0.7, 48000, seed=2)
    scene = hear.get_scene_embeddings(audio, model)
    at_24k = soxr.resample(audio[2].numpy(), 48000, 24000, quality="HQ")
    expected = hidden(reference, at_24k).mean(axis=1).reshape(-1)
    assert scene.shape == (3, 96)
    np.testing.assert_allclose(scene[2].numpy(), expected, atol=1e-3)


def test_long_sounds_run_in_windows_that_join_frame_exactly(tiny_encoder_dir, reference):
    model = hear.load_model(str(tiny_encoder_dir), layers=[-1], window_seconds=0.5)
    audio = sounds(1, 1.77, 48000, seed=3)
    embeddings, times = hear.get_timestamp_embeddings(audio, model)
    at_24k = resample(audio[0], 48000, 24000).numpy()
    n = at_24k.size
    assert embeddings.shape == (1, (n - 400) // 320 + 1, 32)  # one whole forward's frame count
    # 0.5 s windows are 12,000 samples (37.5 hops, rounded to 38 = 12,160), each reading 80 more.
    pieces = [at_24k[s : s + 12240] for s in range(0, n, 12160) if n - s >= 400]
    expected = np.concatenate([hidden(reference, p)[-1] for p in pieces])
    np.testing.assert_allclose(embeddings[0].numpy(), expected, atol=1e-5)
    steps = np.diff(times[0].numpy())
    np.testing.assert_allclose(steps, 1000 * 320 / 24000, rtol=1e-5)  # no gap at the joins


def test_other_hear_rates_and_normalisation(tmp_path, tiny_encoder_dir, reference):
    for name in ("config.json", "pytorch_model.bin"):
        (tmp_path / name).write_bytes((tiny_encoder_dir / name).read_bytes())
    preprocessor = json.loads((tiny_encoder_dir / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({**preprocessor, "do_normalize": True})
    )
    model = hear.load_model(str(tmp_path), sample_rate=22050, layers=0)
    audio = 0.3 * sounds(1, 0.9, 22050, seed=4) + 0.1
    scene = hear.get_scene_embeddings(audio, model)
    at_24k = soxr.resample(audio[0].numpy(), 22050, 24000, quality="HQ")
    normalised = (at_24k - at_24k.mean()) / np.sqrt(at_24k.var() + 1e-7)
    expected = hidden(reference, normalised.astype(np.float32))[0].mean(axis=0)
    np.testing.assert_allclose(scene[0].numpy(), expected, atol=1e-3)


def test_layers_from_the_environment(monkeypatch, tiny_encoder_dir):
    monkeypatch.setenv(hear.LAYERS_VARIABLE, "0,-1")
    assert hear.load_model(str(tiny_encoder_dir)).layers == [0, 2]
    monkeypatch.setenv(hear.LAYERS_VARIABLE, "top")
    with pytest.raises(ValueError, match="CULTUREMERT_HEAR_LAYERS.*'top'"):
        hear.load_model(str(tiny_encoder_dir))


def test_bad_input_is_named(model, tiny_encoder_dir):
    with pytest.raises(ValueError, match=r"one of \(16000, 22050, 44100, 48000\)"):
        hear.load_model(str(tiny_encoder_dir), sample_rate=24000)
    with pytest.raises(ValueError, match=r"\[n_sounds, n_samples\]"):
        hear.get_scene_embeddings(torch.zeros(48000), model)
    with pytest.raises(ValueError, match=r"audio\[0\]: .*at least 400"):
        hear.get_scene_embeddings(torch.zeros(1, 100), model)
    with pytest.raises(ValueError, match="no sounds"):
        hear.get_scene_embeddings(torch.zeros(0, 48000), model)


def test_a_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(OSError, match="no such directory"):
        hear.load_model(str(Path(tmp_path) / "nowhere"))
