"""Audio decoding: formats, rates, channels, normalisation, and bad files."""

from __future__ import annotations

import tracemalloc

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
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


@pytest.mark.parametrize("orig_rate", [8000, 22050, 44100, 48000, 192000])
def test_soxr_stream_gives_the_one_shot_samples(orig_rate):
    # load_audio resamples block by block; this is what makes it the same as the old one-shot.
    signal = np.random.default_rng(0).standard_normal(3 * orig_rate + 123).astype(np.float32)
    one_shot = soxr.resample(signal, orig_rate, 24000, quality="HQ")
    for block in [1000, 12295, 65536]:
        stream = soxr.ResampleStream(orig_rate, 24000, 1, dtype="float32", quality="HQ")
        chunks = [
            stream.resample_chunk(signal[i : i + block]) for i in range(0, len(signal), block)
        ]
        chunks.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
        np.testing.assert_array_equal(np.concatenate(chunks), one_shot)  # observed: bit-exact


def write_in_blocks(path, rate: int, channels: int, seconds: int) -> None:
    """16-bit WAV of one tone plus noise per channel, written a second at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        for second in range(seconds):
            t = second + np.arange(rate) / rate
            block = np.stack([0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)])
            out.write(block.T + 0.05 * rng.standard_normal((rate, channels)))


def test_long_multichannel_high_rate_audio_is_decoded_in_bounded_memory(tmp_path):
    path = tmp_path / "long.wav"
    write_in_blocks(path, 192000, 6, 20)  # 20 s × 6 ch × 192 kHz: 92 MB as float32
    tracemalloc.start()
    try:
        waveform = load_audio(path, 24000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 4 * waveform.nbytes  # 2.4 MB of result; whole, the file is 48× that
    # The old way, all at once: the whole file, its channel mean, one soxr call.
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    expected = soxr.resample(data.mean(axis=1), rate, 24000, quality="HQ")
    np.testing.assert_allclose(waveform, expected, rtol=0, atol=1e-6)


def test_duration_falls_back_to_ffmpeg_for_files_libsndfile_refuses(tmp_path):
    path = tmp_path / "tone.mka"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (tone(16000, 1.5)[None] * 32767).astype(np.int16), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert abs(audio_duration(path) - 1.5) < 0.01
    assert abs(len(load_audio(path, 24000)) - 36000) <= 1
