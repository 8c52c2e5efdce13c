"""The torch resampler against soxr's HQ filter, and its response written out in decibels."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

from culturemert.resampling import resample

PAIRS = [(48000, 24000), (44100, 24000), (22050, 24000), (16000, 24000), (24000, 48000)]


def band_limited(rate: int, n_samples: int, top: float, seed: int) -> np.ndarray:
    """A sum of 20 sines at random frequencies below ``top`` Hz, random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / rate
    tones = [
        np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(20, top, 20)
    ]
    return (sum(tones) / 20).astype(np.float32)


@pytest.mark.parametrize(("orig", "new"), PAIRS)
def test_agrees_with_soxr_hq_on_band_limited_audio(orig, new):
    nyquist = min(orig, new) / 2
    n_samples = orig + 1234  # not a whole number of blocks
    signal = band_limited(orig, n_samples, 0.9 * nyquist, seed=orig + new)
    expected = soxr.resample(signal, orig, new, quality="HQ")
    got = resample(torch.from_numpy(signal), orig, new).numpy()
    assert got.shape == expected.shape  # the same length as soxr's
    edge = new // 20  # both filters see zeros beyond the ends, each its own length of them
    assert np.abs(got[edge:-edge] - expected[edge:-edge]).max() < 1e-4


@pytest.mark.parametrize(
    ("fraction", "low_db", "high_db"),
    [(0.5, -0.01, 0.01), (0.9, -0.05, 0.01), (1.02, -300.0, -120.0), (1.05, -300.0, -120.0)],
)
def test_response_passes_the_band_and_stops_aliases(fraction, low_db, high_db):
    # A 48 kHz tone at `fraction` of the 12 kHz output Nyquist; above 1 it would alias.
    t = np.arange(96000) / 48000
    tone = torch.from_numpy(np.sin(2 * np.pi * fraction * 12000 * t))
    out = resample(tone, 48000, 24000).numpy()[4800:-4800]
    gain_db = 20 * np.log10(np.sqrt(2 * np.mean(out**2)) + 1e-15)
    assert low_db <= gain_db <= high_db


def test_batches_keep_shape_dtype_and_device():
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.standard_normal((2, 3, 4800)).astype(np.float32))
    out = resample(batch, 48000, 24000)
    assert out.shape == (2, 3, 2400) and out.dtype == torch.float32 and out.device == batch.device
    one = resample(batch[1, 2], 48000, 24000)
    torch.testing.assert_close(out[1, 2], one, rtol=0, atol=1e-6)
    assert resample(batch.double(), 48000, 24000).dtype == torch.float64
    assert resample(batch, 24000, 24000) is batch
    with pytest.raises(ValueError, match="positive"):
        resample(batch, 0, 24000)


@pytest.mark.parametrize(("orig", "new"), PAIRS)
def test_lengths_are_soxrs(orig, new):
    for n_samples in (1, 7, 11, 100, 514, 17235, 23284):
        expected = len(soxr.resample(np.zeros(n_samples, np.float32), orig, new, quality="HQ"))
        assert resample(torch.zeros(n_samples), orig, new).shape == (expected,)
