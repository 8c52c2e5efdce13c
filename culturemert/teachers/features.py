"""Frame features for k-means teachers, one row per encoder frame (75 Hz at 24 kHz).

Row t describes the encoder's receptive field of frame t, samples ``[320·t, 320·t + 400)``:
MFCC and log-mel use exactly that window; chroma folds a 12-bins-per-octave CQT centred on
its middle (sample ``320·t + 200``) into pitch classes (index 0 = C).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from nnAudio.features import CQT, MFCC, MelSpectrogram
from torch import nn

from culturemert.frames import HOP_SAMPLES, MIN_SAMPLES, SAMPLE_RATE, encoder_frames

#: Feature kinds a k-means codebook can be fitted on; ``+`` joins several (e.g. ``logmel+chroma``).
FEATURE_KINDS = ("mfcc", "logmel", "chroma")
N_MFCC = 20  # with first and second differences: 60 dimensions
N_MELS = 64
CHROMA_OCTAVES = 7


@cache
def _transform(kind: str) -> nn.Module:
    """The nnAudio front end of one feature kind (built once per process)."""
    framing = dict(sr=SAMPLE_RATE, n_fft=MIN_SAMPLES, hop_length=HOP_SAMPLES, center=False)
    if kind == "mfcc":
        return MFCC(n_mfcc=N_MFCC, n_mels=40, top_db=None, verbose=False, **framing)
    if kind == "logmel":
        return MelSpectrogram(n_mels=N_MELS, verbose=False, **framing)
    if kind == "chroma":
        return CQT(
            sr=SAMPLE_RATE,
            hop_length=HOP_SAMPLES,
            fmin=32.7,
            n_bins=12 * CHROMA_OCTAVES,
            bins_per_octave=12,
            pad_mode="constant",
            verbose=False,
        )
    raise ValueError(f"unknown feature kind {kind!r} (choose from {', '.join(FEATURE_KINDS)})")


def _deltas(features: np.ndarray) -> np.ndarray:
    """Features with their first and second differences over time appended."""
    if len(features) < 2:  # np.gradient needs two frames
        first = second = np.zeros_like(features)
    else:
        first = np.gradient(features, axis=0)
        second = np.gradient(first, axis=0)
    return np.concatenate([features, first, second], axis=1)


@torch.no_grad()
def _single_kind(signal: torch.Tensor, kind: str, frames: int) -> np.ndarray:
    if kind == "chroma":
        # centre CQT frame t on the receptive field's middle, sample 320·t + 200
        cqt = _transform(kind)(signal[None, MIN_SAMPLES // 2 :])[0, :, :frames].numpy()
        chroma = cqt.reshape(CHROMA_OCTAVES, 12, -1).sum(axis=0).T
        return chroma / np.maximum(chroma.max(axis=1, keepdims=True), 1e-8)
    values = _transform(kind)(signal[None])[0].T.numpy()[:frames]
    return _deltas(values) if kind == "mfcc" else np.log(values + 1e-5)


def frame_features(waveform: np.ndarray, kinds: str) -> np.ndarray:
    """``[T, dims]`` float32 features of a 24 kHz waveform, T = encoder frames of its length."""
    signal = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(-1)
    frames = encoder_frames(signal.numel())
    if frames == 0:
        raise ValueError(f"waveform has {signal.numel()} samples; at least {MIN_SAMPLES} needed")
    parts = [_single_kind(signal, kind, frames) for kind in kinds.split("+")]
    return np.concatenate(parts, axis=1).astype(np.float32)
