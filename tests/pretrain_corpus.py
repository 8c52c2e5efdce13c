"""A small generated pre-training corpus: tone sequences per tradition and a teacher that labels
each frame with its tone's pitch and loudness, so masked prediction has something to learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from culturemert.manifest import Track, write_manifest
from culturemert.teachers import encoder_frames, teacher_hash
from culturemert.teachers.targets import compute_targets

RATE = 24000
PITCHES = np.array([200.0, 300.0, 450.0, 600.0, 800.0, 1000.0, 1300.0, 1700.0])
LEVELS = np.array([0.05, 0.1, 0.2, 0.4])
PITCH_ODDS = 0.5 ** np.arange(1, 9) / (0.5 ** np.arange(1, 9)).sum()
LEVEL_ODDS = np.array([0.7, 0.1, 0.1, 0.1])
SEGMENT = 7200  # samples per tone: 0.3 s, several mask spans long


def tone_track(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A sequence of 0.1 s tones with random pitch and loudness, plus a little noise."""
    length = int(seconds * RATE)
    segments = -(-length // SEGMENT)
    # Skewed choices: the label statistics alone are worth learning, quickly.
    pitch = rng.choice(len(PITCHES), segments, p=PITCH_ODDS).repeat(SEGMENT)[:length]
    level = rng.choice(len(LEVELS), segments, p=LEVEL_ODDS).repeat(SEGMENT)[:length]
    phase = np.cumsum(2 * np.pi * PITCHES[pitch] / RATE)
    noise = 0.005 * rng.standard_normal(length)
    return (LEVELS[level] * np.sin(phase) + noise).astype(np.float32)


class ToneTeacher:
    """Frame t → (nearest pitch index, loudness index) of the audio around sample 320·t."""

    name = "tone-test"
    codebook_sizes = [len(PITCHES), len(LEVELS)]
    hash = teacher_hash("tone-test", {"pitches": PITCHES.tolist(), "levels": LEVELS.tolist()})

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        frames = encoder_frames(len(waveform))
        windows = np.stack([waveform[320 * t : 320 * t + 400] for t in range(frames)])
        times = np.arange(400) / RATE
        basis = np.exp(-2j * np.pi * PITCHES[:, None] * times[None, :])  # [pitches, 400]
        pitch = np.abs(windows @ basis.T).argmax(axis=1)
        rms = np.sqrt((windows**2).mean(axis=1)) * np.sqrt(2)
        level = np.abs(rms[:, None] - LEVELS[None, :]).argmin(axis=1)
        return np.stack([pitch, level]).astype(np.int64)


def write_corpus(
    folder: Path, traditions: dict[str, list[float]], *, name: str = "corpus", seed: int = 0
) -> tuple[Path, list[Track]]:
    """Write tone tracks (seconds per track, per tradition) and their JSONL manifest."""
    rng = np.random.default_rng(seed)
    audio = folder / name
    audio.mkdir(parents=True, exist_ok=True)
    tracks = []
    for tradition, durations in traditions.items():
        for number, seconds in enumerate(durations):
            track_id = f"{name}-{tradition}-{number}"
            sf.write(audio / f"{track_id}.wav", tone_track(seconds, rng), RATE, subtype="FLOAT")
            tracks.append(
                Track(track_id, f"{name}/{track_id}.wav", tradition=tradition, duration=seconds)
            )
    manifest = write_manifest(folder / f"{name}.jsonl", tracks)
    return manifest, tracks


def write_targets(folder: Path, manifests: list[Path]) -> Path:
    """Targets of every manifest's tracks by :class:`ToneTeacher`, as ``culturemert targets``."""
    from culturemert.manifest import read_manifest

    out = folder / "targets"
    for manifest in manifests:
        compute_targets(
            ToneTeacher(), read_manifest(manifest), manifest.parent, out, progress=False
        )
    return out


def corpus_recipe(
    folder: Path, encoder_dir: Path, *, stages: list[dict], replay: bool = False
) -> dict:
    """A recipe dict over a generated corpus (two traditions, optional replay) and its targets."""
    manifest, _ = write_corpus(folder, {"lyra": [3.0, 4.0], "makam": [5.0, 6.0]})
    manifests = [manifest]
    data = {"manifests": [str(manifest)], "num_workers": 0}
    if replay:
        western, _ = write_corpus(folder, {"western": [4.0, 4.0]}, name="western", seed=1)
        manifests.append(western)
        data["replay_manifest"] = str(western)
    return {
        "init": str(encoder_dir),
        "teacher": {"targets": str(write_targets(folder, manifests)), "hash": ToneTeacher.hash},
        "objective": {"codebook_sizes": ToneTeacher.codebook_sizes, "use_cqt": False},
        "data": data,
        "engine": {"accelerator": "cpu", "devices": 1, "precision": "32"},
        "seed": 7,
        "checkpoint_every": 2,
        "log_every": 1,
        "stages": stages,
    }


def stage(name: str, trainable: list[str], steps: int, **extra) -> dict:
    """A short stage on 0.5 s crops, 4 per update, with a linear re-warm/re-decay."""
    return {
        "name": name,
        "trainable": trainable,
        "mixture": {"traditions": ["lyra", "makam"]},
        "schedule": {"peak_lr": 2e-3, "warmup_steps": 1, "end_lr": 2e-4},
        "steps": steps,
        "batch_seconds": 2.0,
        "crop_seconds": 0.5,
        **extra,
    }
