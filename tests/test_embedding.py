"""Embedding: pooled hidden states against direct HubertModel forwards written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturemert.embedding import (
    LayerWeighting,
    embed,
    embed_stream,
    frame_bounds,
    frame_times,
    window_bounds,
)
from culturemert.model import load_encoder


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return load_encoder(tiny_encoder_dir, attn_implementation="eager")


def direct_hidden(encoder, piece: np.ndarray) -> np.ndarray:
    """[layers, frames, dims] for one waveform, by a plain forward pass."""
    with torch.no_grad():
        states = encoder(torch.from_numpy(piece)[None], output_hidden_states=True).hidden_states
    return torch.stack(states)[:, 0].numpy()


def test_all_layers_mean_pooled(encoder):
    waveform = np.random.default_rng(0).standard_normal(30000).astype(np.float32)
    features = embed(encoder, waveform)
    hidden = direct_hidden(encoder, waveform)
    assert features.shape == (3, 32)
    np.testing.assert_allclose(features, hidden.mean(axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["max", "mean+std"])
def test_other_pools(encoder, pool):
    waveform = np.random.default_rng(1).standard_normal(20000).astype(np.float32)
    features = embed(encoder, waveform, pool=pool, layers=[0, -1])
    hidden = direct_hidden(encoder, waveform)[[0, 2]]
    expected = (
        hidden.max(axis=1)
        if pool == "max"
        else np.concatenate([hidden.mean(axis=1), hidden.std(axis=1)], axis=-1)
    )
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_windows_match_separate_forwards_and_ignore_batching(encoder):
    sr = 24000
    # 2.5 windows of 0.5 s: two full windows plus a 0.25 s tail (kept: longer than one frame).
    waveform = np.random.default_rng(2).standard_normal(int(1.25 * sr)).astype(np.float32)
    features = embed(encoder, waveform, window_seconds=0.5, batch_size=2)
    assert features.shape == (3, 3, 32)
    pieces = [waveform[0:12000], waveform[12000:24000], waveform[24000:]]
    for w, piece in enumerate(pieces):
        expected = direct_hidden(encoder, piece).mean(axis=1)
        np.testing.assert_allclose(features[:, w], expected, rtol=1e-5, atol=1e-5)
    one_by_one = embed(encoder, waveform, window_seconds=0.5, batch_size=1)
    np.testing.assert_allclose(features, one_by_one, rtol=1e-5, atol=1e-6)
    dropped = embed(encoder, waveform, window_seconds=0.5, drop_last=True)
    assert dropped.shape == (3, 2, 32)


def test_stream_batches_across_waveforms_and_keeps_their_order(encoder):
    rng = np.random.default_rng(3)
    sr = 24000
    # Equal lengths batch together across waveforms; odd tails, a missing waveform and one too
    # short for a frame pass through in order.
    lengths = [int(1.0 * sr), int(0.5 * sr), int(1.3 * sr), 300, int(1.0 * sr), int(0.2 * sr)]
    waveforms = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    inputs = [(f"w{i}", w) for i, w in enumerate(waveforms)]
    inputs.insert(3, ("missing", None))
    out = list(embed_stream(encoder, inputs, window_seconds=0.5, batch_size=3))
    assert [key for key, _, _ in out] == [key for key, _ in inputs]
    for (key, features, error), (_, waveform) in zip(out, inputs, strict=True):
        if key in ("missing", "w3"):
            assert features is None and error
            continue
        assert error is None
        pieces = [waveform[i : i + 12000] for i in range(0, len(waveform), 12000)]
        expected = np.stack([direct_hidden(encoder, p).mean(axis=1) for p in pieces], axis=1)
        np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_frames_of_one_window_equal_a_whole_forward(encoder):
    waveform = np.random.default_rng(5).standard_normal(7777).astype(np.float32)
    frames = embed(encoder, waveform, pool=None)
    windowed = embed(encoder, waveform, pool=None, window_seconds=1.0)  # longer than the clip
    hidden = direct_hidden(encoder, waveform)
    assert frames.shape == hidden.shape == (3, (7777 - 400) // 320 + 1, 32)
    np.testing.assert_allclose(frames, hidden, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(windowed, hidden, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_samples", [24000, 24000 + 80, 24000 + 399, 24000 + 400, 31234])
def test_windowed_frames_join_without_gaps_or_duplicates(encoder, n_samples):
    waveform = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    # 0.1 s = 2400 samples = 7.5 hops: rounds to 8 hops (2560 samples) between windows.
    frames = embed(encoder, waveform, pool=None, window_seconds=0.1, batch_size=3)
    whole = direct_hidden(encoder, waveform)
    assert frames.shape == whole.shape  # frame count of one whole forward, exactly
    # Window k reads [2560k, 2560k + 2640): its frames are those of that piece on its own.
    starts = range(0, n_samples, 2560)
    pieces = [waveform[s : s + 2640] for s in starts if n_samples - s >= 400]
    expected = np.concatenate([direct_hidden(encoder, piece) for piece in pieces], axis=1)
    np.testing.assert_allclose(frames, expected, rtol=1e-5, atol=1e-5)


def test_frame_times_are_frame_centres():
    # Frame i covers samples [320 i, 320 i + 400): its centre is at 320 i + 200.
    np.testing.assert_allclose(frame_times(3, 24000), [200 / 24000, 520 / 24000, 840 / 24000])
    assert frame_bounds(1000, 320) == [(0, 400), (320, 720)]  # 640: only 360 samples left
    assert frame_bounds(1040, 320) == [(0, 400), (320, 720), (640, 1040)]
    with pytest.raises(ValueError, match="multiple of 320"):
        frame_bounds(1000, 300)


def test_window_bounds_rules():
    assert window_bounds(1000, 400) == [(0, 400), (400, 800)]  # 200-sample tail < one frame
    assert window_bounds(1200, 400) == [(0, 400), (400, 800), (800, 1200)]
    assert window_bounds(1300, 400) == [(0, 400), (400, 800), (800, 1200)]
    assert window_bounds(1300, 500) == [(0, 500), (500, 1000)]
    assert window_bounds(300, 400) == []
    assert window_bounds(900, 1000) == [(0, 900)]
    assert window_bounds(900, 1000, drop_last=True) == []


def test_bad_arguments(encoder):
    waveform = np.zeros(8000, dtype=np.float32)
    with pytest.raises(ValueError, match="pool"):
        embed(encoder, waveform, pool="median")
    with pytest.raises(ValueError, match="out of range"):
        embed(encoder, waveform, layers=[5])
    with pytest.raises(ValueError, match="at least 400"):
        embed(encoder, waveform[:100])


def test_layer_weighting_starts_uniform_and_learns():
    features = torch.randn(4, 13, 8)
    weighting = LayerWeighting(13)
    torch.testing.assert_close(weighting(features), features.mean(dim=1))
    target = features[:, 5]
    optimizer = torch.optim.SGD(weighting.parameters(), lr=5.0)
    for _ in range(200):
        optimizer.zero_grad()
        ((weighting(features) - target) ** 2).mean().backward()
        optimizer.step()
    assert int(weighting.weights.argmax()) == 5
    assert weighting.weights.sum().item() == pytest.approx(1.0)


def test_top_level_api_names_the_functions():
    import culturemert as cm
    import culturemert.embedding

    assert cm.embed is culturemert.embedding.embed
    assert cm.LayerWeighting is LayerWeighting
    assert cm.load_encoder is load_encoder
    with pytest.raises(AttributeError):
        cm.no_such_name  # noqa: B018
