"""Audio decoding: formats, rates, channels, normalisation, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from transformers import Wav2Vec2FeatureExtractor

from culturemert.audio import AudioError, audio_duration, find_audio_files, load_audio

FORMATS = [
    ("wav", "PCM_U8"),
    ("wav", "PCM_16"),
    ("wav", "PCM_24"),
    ("wav", "PCM_32"),
    ("wav", "FLOAT"),
    ("flac", "PCM_16"),
    ("ogg", "VORBIS"),
    ("mp3", "MPEG_LAYER_III"),
]


def tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("ext,subtype", FORMATS)
@pytest.mark.parametrize("rate", [16000, 44100])
def test_formats_and_rates_resample_to_the_model_rate(tmp_path, ext, subtype, rate):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone(rate, 1.0), rate, subtype=subtype)
    waveform = load_audio(path, 24000)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    # Lossy codecs add delay and padding; the interior must still be the same 440 Hz tone.
    assert abs(len(waveform) - 24000) < 0.1 * 24000
    spectrum = np.abs(np.fft.rfft(waveform[2400:21600] * np.hanning(19200)))
    peak_hz = np.argmax(spectrum) * 24000 / 19200
    assert abs(peak_hz - 440) < 3
    if ext in ("wav", "flac"):  # lossless: compare against the analytic tone at 24 kHz
        expected = tone(24000, 1.0)
        tolerance = 2e-2 if subtype == "PCM_U8" else 2e-3
        assert np.max(np.abs(waveform[200:-200] - expected[200:-200])) < tolerance


def test_channels_are_averaged(tmp_path):
    left, right = tone(24000, 0.5, 440), tone(24000, 0.5, 660)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 24000, subtype="FLOAT")
    waveform = load_audio(tmp_path / "stereo.wav", 24000)
    np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-6)


def test_normalisation_matches_wav2vec2_feature_extractor(tmp_path):
    sf.write(tmp_path / "a.wav", 0.01 * tone(24000, 0.5) + 0.003, 24000, subtype="FLOAT")
    ours = load_audio(tmp_path / "a.wav", 24000, normalize=True)
    raw = load_audio(tmp_path / "a.wav", 24000)
    theirs = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([raw], attention_mask=None)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def bad_files(tmp_path):
    (tmp_path / "text.wav").write_text("this is not audio at all\n" * 50)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 24000)
    nan = tone(24000, 0.5)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 24000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", tone(24000, 0.01), 24000)  # 240 samples < one frame
    return {
        "text.wav": "cannot decode",
        "empty.wav": "no audio samples",
        "nan.wav": "NaN or infinite",
        "short.wav": "too short",
        "missing.wav": "cannot decode",
    }


def test_bad_files_raise_one_clear_error(tmp_path):
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(AudioError, match=reason) as caught:
            load_audio(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)
        assert caught.value.path == str(tmp_path / name)


def test_real_recordings_decode(shared_data):
    files = find_audio_files(shared_data / "audio")
    assert len(files) == 13
    for path in files:
        info = sf.info(path)
        waveform = load_audio(path, 24000)
        assert waveform.dtype == np.float32 and np.isfinite(waveform).all()
        assert abs(len(waveform) / 24000 - info.frames / info.samplerate) < 0.06
        assert abs(audio_duration(path) - info.frames / info.samplerate) < 1e-9
