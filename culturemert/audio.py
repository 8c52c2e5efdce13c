"""Decoding audio files to float32 mono waveforms at a model's sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from culturemert.frames import MIN_SAMPLES, SAMPLE_RATE

#: Extensions picked up when a folder is scanned for audio.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"})


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
    """Decode any libsndfile-readable file to a float32 mono waveform at ``sample_rate``.

    Channels are averaged; resampling uses soxr (HQ). ``normalize`` applies the zero-mean,
    unit-variance normalisation of a checkpoint whose preprocessor says ``do_normalize: true``.
    Raises :class:`AudioError` for unreadable, empty, non-finite or too-short audio.
    """
    try:
        data, orig_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as error:
        raise AudioError(path, f"cannot decode audio ({error})") from None
    if data.size == 0:
        raise AudioError(path, "file contains no audio samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    waveform = resample(mono, orig_rate, sample_rate)
    if waveform.shape[0] < min_samples:
        raise AudioError(
            path,
            f"too short: {waveform.shape[0]} samples at {sample_rate} Hz, "
            f"the encoder needs at least {min_samples} (one frame)",
        )
    return normalize_waveform(waveform) if normalize else waveform


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding (0.0 when unreadable)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return 0.0
    return info.frames / info.samplerate if info.samplerate else 0.0


def find_audio_files(folder: str | Path) -> list[Path]:
    """All audio files below ``folder`` (recursively), sorted for a stable order."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
