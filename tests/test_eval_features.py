"""Feature cache: values against HubertModel, cache hits without audio reads, keys that follow
encoder/audio/settings."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from culturemert.audio import load_audio
from culturemert.embedding import embed
from culturemert.evaluate.features import FeatureCache, settings_for
from culturemert.evaluate.fingerprints import AudioHashes, audio_fingerprint, encoder_fingerprint
from culturemert.manifest import Track
from culturemert.model import load_encoder

pytestmark = pytest.mark.usefixtures("one_thread")
AN_HOUR_AGO = time.time() - 3600


@pytest.fixture
def tracks(tmp_path):
    """Three generated recordings (one at 16 kHz, so it is resampled), one missing, one corrupt."""
    rng = np.random.default_rng(0)
    made = []
    for i, (seconds, rate) in enumerate([(1.3, 24000), (0.7, 16000), (0.45, 24000)]):
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = tmp_path / f"t{i}.wav"
        sf.write(path, wave.astype(np.float32), rate)
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))  # audio that has not changed for a while
        made.append(Track(f"t{i}", str(path)))
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    os.utime(tmp_path / "broken.wav", (AN_HOUR_AGO, AN_HOUR_AGO))
    made.append(Track("broken", str(tmp_path / "broken.wav")))
    made.append(Track("gone", str(tmp_path / "gone.wav")))
    return made


def reference_windows(encoder, path, window_seconds: float) -> np.ndarray:
    """``[windows, layers, dims]``: each window alone through HubertModel, time-mean, float16."""
    waveform = torch.from_numpy(load_audio(path))
    step = round(window_seconds * 24000)
    pieces = [waveform[i : i + step] for i in range(0, len(waveform), step)]
    pieces = [p for p in pieces if len(p) >= 400]
    with torch.no_grad():
        pooled = [
            torch.stack(encoder(p[None], output_hidden_states=True).hidden_states)[:, 0].mean(1)
            for p in pieces
        ]
    return torch.stack(pooled).numpy().astype(np.float16)


def test_features_equal_hubert_bit_for_bit_and_failures_are_reported(
    tiny_encoder_dir, tracks, tmp_path
):
    encoder = load_encoder(tiny_encoder_dir, attn_implementation="eager")  # fp32, eager
    settings = settings_for(encoder, window_seconds=0.5)
    cache = FeatureCache(encoder, tmp_path / "cache", settings, batch_size=1, progress=False)
    split = cache.features(tracks, "train")
    assert split.track_ids == ["t0", "t1", "t2"]
    assert set(split.failed) == {"broken", "gone"}
    assert "2 of 5 tracks" in split.failure_summary()
    assert split.features.dtype == np.float16 and isinstance(split.features, np.memmap)
    for position, track in enumerate(tracks[:3]):
        expected = reference_windows(encoder, track.path, 0.5)
        got = np.asarray(split.features[split.track_index == position])
        assert got.shape == expected.shape  # 1.3 s -> 3 windows, 0.7 s -> 2, 0.45 s -> 1
        np.testing.assert_array_equal(got, expected)
    # Batching equal-length windows across tracks moves the last bits only.
    batched = FeatureCache(encoder, tmp_path / "other", settings, batch_size=4, progress=False)
    np.testing.assert_allclose(
        np.asarray(batched.features(tracks, "train").features, np.float32),
        np.asarray(split.features, np.float32),
        rtol=2e-3,
        atol=2e-3,
    )


def test_second_run_opens_no_audio_file(tiny_encoder_dir, tracks, tmp_path, audio_opens):
    settings = settings_for(tiny_encoder_dir, window_seconds=None)
    first = FeatureCache(tiny_encoder_dir, tmp_path, settings, workers=0, progress=False)
    first = first.features(tracks, "x")
    assert audio_opens  # the first run read the audio (hashing and decoding)
    audio_opens.clear()

    again = FeatureCache(tiny_encoder_dir, tmp_path, settings, workers=0, progress=False)
    second = again.features(tracks, "x")
    assert audio_opens == []
    assert again._encoder is None  # not even loaded
    assert second.directory == first.directory
    np.testing.assert_array_equal(second.features, first.features)
    assert second.failed == first.failed


def test_audio_hashes_follow_size_and_modification_time(tracks, tmp_path, monkeypatch):
    import culturemert.evaluate.fingerprints as fingerprints

    store = tmp_path / "hashes.json"
    before = audio_fingerprint(tracks, AudioHashes(store))
    hashed = []
    original = fingerprints.sha256_file
    monkeypatch.setattr(fingerprints, "sha256_file", lambda p: hashed.append(p) or original(p))
    assert audio_fingerprint(tracks, AudioHashes(store)) == before and hashed == []
    path = tracks[0].path
    os.utime(path, (AN_HOUR_AGO + 1, AN_HOUR_AGO + 1))  # touched, same content: same key
    assert audio_fingerprint(tracks, AudioHashes(store)) == before and hashed == [path]
    data, rate = sf.read(path, dtype="float32")
    sf.write(path, data * 0.5, rate)  # new content: a new key
    assert audio_fingerprint(tracks, AudioHashes(store)) != before


def test_key_changes_with_encoder_audio_and_settings(tiny_encoder_dir, tracks, tmp_path):
    settings = settings_for(tiny_encoder_dir, window_seconds=0.5)
    cache = FeatureCache(tiny_encoder_dir, tmp_path, settings, progress=False)
    entry = cache.entry(tracks, "train")
    assert FeatureCache(tiny_encoder_dir, tmp_path, settings).entry(tracks, "train") == entry

    other_window = settings_for(tiny_encoder_dir, window_seconds=1.0)
    other_pool = settings_for(tiny_encoder_dir, pool="max", window_seconds=0.5)
    for changed in (other_window, other_pool):
        assert FeatureCache(tiny_encoder_dir, tmp_path, changed).entry(tracks, "train") != entry

    model = load_encoder(tiny_encoder_dir)
    in_memory = encoder_fingerprint(model)
    with torch.no_grad():
        model.encoder.layers[0].attention.q_proj.weight[0, 0] += 1e-3
    assert encoder_fingerprint(model) != in_memory
    assert FeatureCache(model, tmp_path, settings).entry(tracks, "train") != entry

    data = sf.read(tracks[0].path, dtype="float32")[0]
    sf.write(tracks[0].path, data * 0.5, 24000)
    assert cache.entry(tracks, "train") != entry


def test_long_recordings_are_cut_before_encoding(tiny_encoder_dir, tmp_path):
    rate = 24000
    wave = 0.3 * np.sin(2 * np.pi * 330 * np.arange(int(3.0 * rate)) / rate)
    wave[int(1.2 * rate) :] += 0.5  # after the cut: would shift the normalisation if encoded
    sf.write(tmp_path / "long.wav", wave.astype(np.float32), rate)
    track = [Track("long", str(tmp_path / "long.wav"))]
    settings = replace(settings_for(tiny_encoder_dir, window_seconds=0.5), normalize=True)
    cache = FeatureCache(tiny_encoder_dir, tmp_path / "cache", settings, progress=False)
    cut = cache.features(track, "makam-train", max_seconds=1.2)

    kept = sf.read(tmp_path / "long.wav", dtype="float32")[0][: int(1.2 * rate)]
    kept = (kept - kept.mean()) / np.sqrt(kept.var() + 1e-7)  # the encoder's own normalisation
    expected = embed(load_encoder(tiny_encoder_dir), kept, window_seconds=0.5).transpose(1, 0, 2)
    assert cut.features.shape == expected.shape  # 1.2 s in 0.5 s windows: 3, not 6
    np.testing.assert_allclose(np.asarray(cut.features, np.float32), expected, atol=2e-3)

    # Another cut, or none, is another cache entry; the same cut is the same entry.
    entries = {cache.entry(track, "makam-train", seconds) for seconds in (None, 1.2, 2.0)}
    assert len(entries) == 3 and cut.directory in entries
    assert cache.features(track, "makam-train").features.shape[0] == 6
    with pytest.raises(ValueError, match="max_seconds"):
        cache.features(track, "makam-train", max_seconds=0)


def test_no_usable_audio_is_a_clear_error(tiny_encoder_dir, tracks, tmp_path):
    settings = settings_for(tiny_encoder_dir)
    cache = FeatureCache(tiny_encoder_dir, tmp_path / "c", settings, progress=False)
    with pytest.raises(ValueError, match="none of the 2 tracks"):
        cache.features(tracks[3:], "test")
    # Nothing half-written is left behind; only the remembered audio hashes.
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["audio-sha256.json"]
