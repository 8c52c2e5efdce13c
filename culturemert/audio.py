"""Decoding audio files to float32 mono waveforms at a model's sample rate.

libsndfile (soundfile) reads wav/flac/ogg/mp3/aiff; anything it refuses (m4a/AAC, webm/Opus,
wma, video containers) is decoded with FFmpeg through PyAV. Either way the file is decoded in
blocks, each mixed to mono and fed to a streaming soxr resampler, so a long multichannel
high-rate recording is never held whole: peak memory stays near twice the result's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from culturemert.frames import MIN_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    import av

#: Extensions picked up when a folder is scanned for audio (video containers: their audio).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"}
    | {".m4a", ".m4b", ".aac", ".opus", ".webm", ".weba", ".wma", ".mka"}
    | {".mp4", ".mkv", ".mov", ".avi"}
)

#: Samples (frames × channels) decoded per block: about 1 MiB of float32 whatever the layout.
BLOCK_SAMPLES = 1 << 18

SOUNDFILE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, OSError)


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance normalisation as Wav2Vec2FeatureExtractor(do_normalize=True)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    return (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono float32 waveform with soxr's high-quality filter."""
    if orig_rate == target_rate:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    return soxr.resample(waveform, orig_rate, target_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    normalize: bool = False,
    min_samples: int = MIN_SAMPLES,
) -> np.ndarray:
    """Decode an audio file (libsndfile, else FFmpeg via PyAV) to float32 mono at ``sample_rate``.

    Channels are averaged; resampling uses soxr (HQ), streamed block by block, which gives the
    same samples as resampling the whole mono signal at once. ``normalize`` applies the
    zero-mean, unit-variance normalisation of a checkpoint whose preprocessor says
    ``do_normalize: true``. Raises :class:`AudioError` for unreadable, empty, non-finite or
    too-short audio.
    """
    try:
        sound = sf.SoundFile(str(path))
    except SOUNDFILE_ERRORS as error:
        waveform = _load_with_pyav(path, sample_rate, sndfile_reason=str(error))
    else:
        with sound:
            waveform = _mono_at_rate(path, _soundfile_blocks(path, sound), sample_rate)
    if waveform.shape[0] < min_samples:
        raise AudioError(
            path,
            f"too short: {waveform.shape[0]} samples at {sample_rate} Hz, "
            f"the encoder needs at least {min_samples} (one frame)",
        )
    return normalize_waveform(waveform) if normalize else waveform


def _mono_at_rate(
    path: str | Path, blocks: Iterator[tuple[np.ndarray, int]], sample_rate: int
) -> np.ndarray:
    """Resample a stream of (mono float32 block, its rate) to one waveform at ``sample_rate``."""
    chunks, stream, orig_rate, frames = [], None, None, 0
    for mono, rate in blocks:
        if orig_rate is None:
            orig_rate = rate
            if rate != sample_rate:
                stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
        elif rate != orig_rate:  # one resampler, one rate: a switch would be silently wrong
            raise AudioError(path, f"sample rate changes mid-stream ({orig_rate} → {rate} Hz)")
        if not np.isfinite(mono).all():
            raise AudioError(path, "audio contains NaN or infinite samples")
        frames += mono.shape[0]
        chunks.append(mono if stream is None else stream.resample_chunk(mono))
    if frames == 0:
        raise AudioError(path, "file contains no audio samples")
    if stream is not None:
        chunks.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(chunks)


def _soundfile_blocks(path: str | Path, sound: sf.SoundFile) -> Iterator[tuple[np.ndarray, int]]:
    """An open libsndfile file as mono float32 blocks of about ``BLOCK_SAMPLES`` samples."""
    frames = max(1, BLOCK_SAMPLES // sound.channels)
    while True:
        try:
            block = sound.read(frames=frames, dtype="float32", always_2d=True)
        except SOUNDFILE_ERRORS as error:
            raise AudioError(path, f"cannot decode audio ({error})") from None
        if block.shape[0] == 0:
            return
        yield (block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]), sound.samplerate


def _load_with_pyav(path: str | Path, sample_rate: int, *, sndfile_reason: str) -> np.ndarray:
    """Decode with FFmpeg via PyAV, the fallback for files libsndfile refuses."""
    import av

    def refused(reason: str) -> AudioError:
        return AudioError(
            path, f"cannot decode audio (libsndfile: {sndfile_reason}; FFmpeg via PyAV: {reason})"
        )

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise refused(str(error)) from None
    with container:
        stream = container.streams.best("audio")
        if stream is None:
            raise refused("the file has no audio stream")
        return _mono_at_rate(path, _pyav_blocks(path, container, stream), sample_rate)


def _pyav_blocks(
    path: str | Path, container: av.container.InputContainer, stream: av.audio.AudioStream
) -> Iterator[tuple[np.ndarray, int]]:
    """One audio stream's decoded frames as mono float32 blocks, with each frame's rate."""
    import av

    try:
        for frame in container.decode(stream):
            yield _frame_to_mono(frame), frame.sample_rate
    except av.FFmpegError as error:
        raise AudioError(path, f"cannot decode audio (FFmpeg via PyAV: {error})") from None


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A PyAV audio frame as float32 mono: integers scaled to [-1, 1), channels averaged."""
    samples = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if samples.dtype == np.uint8:  # unsigned 8-bit: silence at 128
        samples = (samples.astype(np.float32) - 128) * np.float32(1 / 128)
    elif samples.dtype.kind == "i":  # scaling by a power of two: exact, as libsndfile does
        samples = samples.astype(np.float32) * np.float32(2.0 ** (1 - 8 * samples.dtype.itemsize))
    else:
        samples = samples.astype(np.float32, copy=False)
    if frame.format.is_planar:  # one row per channel
        return samples.mean(axis=0) if channels > 1 else samples[0]
    return samples.reshape(-1, channels).mean(axis=1)  # packed: channels interleaved in one row


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding (0.0 when unreadable)."""
    try:
        info = sf.info(str(path))
    except SOUNDFILE_ERRORS:
        return _pyav_duration(path)
    return info.frames / info.samplerate if info.samplerate else 0.0


def _pyav_duration(path: str | Path) -> float:
    """The audio stream's duration (else the container's) from FFmpeg; 0.0 when unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.best("audio")
            if stream is None:
                return 0.0
            if stream.duration is not None and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else 0.0
    except (av.FFmpegError, OSError):
        return 0.0


def find_audio_files(folder: str | Path) -> list[Path]:
    """All audio files below ``folder`` (recursively), sorted for a stable order."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
