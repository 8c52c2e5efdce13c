"""The FFmpeg (PyAV) fallback: containers and codecs libsndfile refuses, checked against FLAC."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from culturemert.audio import AudioError, audio_duration, find_audio_files, load_audio

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def music(rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    """Int16 [frames, channels]: a harmonic tone with vibrato per channel (own pitch) and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    columns = []
    for channel in range(channels):
        f0 = 110 * 2 ** (channel * 5 / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        tone = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.15
        columns.append(tone + 0.01 * rng.standard_normal(t.shape))
    return np.round(np.stack(columns, axis=1) * 32767).astype(np.int16)


def write_with_pyav(
    path: Path,
    samples: np.ndarray,
    rate: int,
    codec: str,
    *,
    video: bool = False,
    block: int = 4096,
    bit_rate: int | None = None,
) -> Path:
    """Encode int16 [frames, channels] with PyAV (in blocks), with a tiny video stream if asked."""
    layout = LAYOUTS[samples.shape[1]]
    with av.open(str(path), "w") as out:
        audio = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            audio.bit_rate = bit_rate
        if video:
            picture = out.add_stream("mpeg4", rate=5)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
            for i in range(int(5 * samples.shape[0] / rate)):
                frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                frame.pts = i
                out.mux(picture.encode(frame))
            out.mux(picture.encode(None))
        for start in range(0, samples.shape[0], block):
            planar = np.ascontiguousarray(samples[start : start + block].T)
            frame = av.AudioFrame.from_ndarray(planar, format="s16p", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def flac_reference(tmp_path: Path, samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """The same int16 content as FLAC, read whole by soundfile, averaged, resampled in one go."""
    sf.write(tmp_path / "reference.flac", samples, rate, subtype="PCM_16")
    data, file_rate = sf.read(tmp_path / "reference.flac", dtype="float32", always_2d=True)
    return soxr.resample(data.mean(axis=1), file_rate, target, quality="HQ")


def snr_db(signal: np.ndarray, reference: np.ndarray) -> float:
    """Signal-to-noise ratio of ``signal`` against ``reference``, sample by sample (no alignment)."""
    n = min(len(signal), len(reference))
    error = signal[:n] - reference[:n]
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / np.sum(error**2)))


# Lossless codecs covering each decoded sample format: u8 / s16 / s32 packed, s32 planar, float.
LOSSLESS = [
    ("m4a", "alac"),  # s32p
    ("mkv", "flac"),  # s16
    ("mka", "pcm_u8"),  # u8
    ("mka", "pcm_s24le"),  # s32
    ("mov", "pcm_s32le"),  # s32
    ("mka", "pcm_f32le"),  # flt
    ("mov", "pcm_f64le"),  # dbl
]


@pytest.mark.parametrize("ext,codec", LOSSLESS)
def test_lossless_containers_equal_the_flac_decoding(tmp_path, ext, codec):
    samples = music(44100, 1.0, 2)
    if codec == "pcm_u8":  # 8 bits: keep the top byte only, so that the content stays the same
        samples = (samples // 256 * 256).astype(np.int16)
    path = write_with_pyav(tmp_path / f"a.{ext}", samples, 44100, codec)
    with pytest.raises(sf.LibsndfileError):
        sf.info(path)  # the point: libsndfile cannot read it, PyAV has to
    waveform = load_audio(path, 24000)
    expected = flac_reference(tmp_path, samples, 44100, 24000)
    assert waveform.dtype == np.float32 and waveform.shape == expected.shape
    np.testing.assert_allclose(waveform, expected, rtol=0, atol=1e-6)


# Measured at 192 kbit/s against the FLAC reference at 24 kHz, sample by sample with no
# alignment search: AAC 26.8 dB (m4a, 44.1 kHz), 25.8 dB (mp4 with video, 48 kHz), Opus 24.9 dB.
# FFmpeg trims AAC priming and Opus pre-skip itself; a delay left in, or any offset of two
# 24 kHz samples or more, gives under 17 dB (one sample: 18.5-20 dB, 1 ms: below 0 dB).
LOSSY = [
    ("m4a", "aac", 44100, False),
    ("webm", "libopus", 48000, False),
    ("mp4", "aac", 48000, True),
]


@pytest.mark.parametrize("ext,codec,rate,video", LOSSY)
def test_lossy_codecs_come_close_to_the_flac_decoding(tmp_path, ext, codec, rate, video):
    samples = music(rate, 2.0, 2)
    path = write_with_pyav(
        tmp_path / f"a.{ext}", samples, rate, codec, video=video, bit_rate=192000
    )
    waveform = load_audio(path, 24000)
    expected = flac_reference(tmp_path, samples, rate, 24000)
    assert waveform.dtype == np.float32
    # AAC pads its last 1024-sample frame, which m4a/mp4 keep: up to a frame or so more.
    assert 0 <= len(waveform) - len(expected) <= 2048 * 24000 // rate
    assert snr_db(waveform, expected) > 20
    assert abs(audio_duration(path) - 2.0) < 0.02


def test_multichannel_through_pyav_is_the_mean_of_the_channels(tmp_path):
    samples = music(48000, 1.0, 6)
    for ext, codec in [("mkv", "flac"), ("m4a", "alac")]:  # packed s16 and planar s32
        path = write_with_pyav(tmp_path / f"six.{ext}", samples, 48000, codec)
        expected = (samples / 32768).mean(axis=1)  # float64 mean of the exact sample values
        np.testing.assert_allclose(load_audio(path, 48000), expected, rtol=0, atol=1e-6)


def test_a_file_neither_decoder_reads_names_the_file_and_both_decoders(tmp_path):
    path = tmp_path / "noise.m4a"
    path.write_bytes(np.random.default_rng(0).bytes(20000))
    with pytest.raises(AudioError, match="cannot decode audio") as caught:
        load_audio(path)
    message = str(caught.value)
    assert str(path) in message and caught.value.path == str(path)
    assert "libsndfile: " in message and "FFmpeg via PyAV: " in message
    assert audio_duration(path) == 0.0


def test_a_container_without_audio_is_a_clear_error(tmp_path):
    path = tmp_path / "silent-film.mp4"
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=5)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(picture.encode(frame))
        out.mux(picture.encode(None))
    with pytest.raises(AudioError, match="no audio stream") as caught:
        load_audio(path)
    assert str(path) in str(caught.value)
    assert audio_duration(path) == 0.0


def test_a_sample_rate_change_mid_stream_is_an_error(tmp_path):
    # Raw ADTS AAC: two streams back to back is still a valid file, at two rates.
    first = write_with_pyav(tmp_path / "a.aac", music(44100, 0.5, 1), 44100, "aac")
    second = write_with_pyav(tmp_path / "b.aac", music(22050, 0.5, 1), 22050, "aac")
    joined = tmp_path / "joined.aac"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    assert load_audio(first).dtype == np.float32
    with pytest.raises(AudioError, match="sample rate changes mid-stream") as caught:
        load_audio(joined)
    assert str(joined) in str(caught.value)


def test_folder_scan_picks_up_the_new_extensions(tmp_path):
    names = ["a.M4A", "b.webm", "c.opus", "d.mp4", "e.mkv", "f.wma", "g.mov", "h.flac", "i.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = [p.name for p in find_audio_files(tmp_path)]
    assert found == names[:-1]


def test_pyav_decoding_memory_is_bounded(tmp_path):
    """6 channels at 96 kHz as PCM in Matroska: decoded frame by frame, never held whole."""
    rate, channels, seconds = 96000, 6, 6.0
    path = tmp_path / "long.mka"
    samples = music(rate, seconds, channels)
    write_with_pyav(path, samples, rate, "pcm_s16le", block=8192)
    expected = soxr.resample((samples / 32768).astype(np.float32).mean(axis=1), rate, 24000, "HQ")
    del samples
    tracemalloc.start()
    try:
        waveform = load_audio(path, 24000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Whole, the decoded file would be 48 × the result (6 channels × 4× the rate) in float32.
    assert peak <= 4 * waveform.nbytes
    np.testing.assert_allclose(waveform, expected, rtol=0, atol=1e-6)
