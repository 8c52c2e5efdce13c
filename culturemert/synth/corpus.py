"""Deterministic clips and whole corpora: audio files plus manifests in the toolkit's format."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
from tqdm import tqdm

from culturemert.atomic import atomic_path, write_text
from culturemert.frames import MIN_SAMPLES, SAMPLE_RATE
from culturemert.manifest import Track, write_manifest
from culturemert.synth.compose import Score, compose
from culturemert.synth.render import PARTS, mix, render_stems
from culturemert.synth.traditions import TRADITIONS, get_tradition

AUDIO_FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "FLOAT")}
SPLITS = ("train", "valid", "test")


@dataclass
class CorpusSettings:
    """A corpus as ``culturemert synth`` draws it: the keyword arguments of :func:`write_corpus`."""

    traditions: list[str] = field(default_factory=lambda: list(TRADITIONS))
    hours: float | None = None
    clips_per_tradition: int | None = None
    clip_seconds: float = 5.0
    splits: tuple[float, ...] = (0.7, 0.1, 0.2)
    audio_format: str = "flac"
    seed: int = 0


class Clip(NamedTuple):
    """A generated clip: float32 mono waveform at 24 kHz, its tags, and the score it came from."""

    waveform: np.ndarray
    tags: list[str]
    details: Score


def clip_seed(seed: int, tradition: str, index: int) -> int:
    """The seed of clip ``index`` of ``tradition`` in a corpus drawn with global ``seed``."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(tradition.encode()), index])
    return int(sequence.generate_state(1, np.uint64)[0])


def generate_clip(
    tradition: str, seed: int, duration: float = 5.0, *, parts: Sequence[str] = PARTS
) -> Clip:
    """Synthesise one clip of ``tradition``; the same seed gives bit-identical audio and tags.

    ``parts`` picks which of the melody, second (heterophonic) instrument, percussion and drone
    are mixed in; the score, and so the tags, do not depend on it.
    """
    spec = get_tradition(tradition)
    if duration * SAMPLE_RATE < MIN_SAMPLES:
        raise ValueError(f"clip duration {duration} s is shorter than one encoder frame")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    compose_seed, render_seed = np.random.SeedSequence(seed).spawn(2)
    score = compose(spec, np.random.default_rng(compose_seed), duration)
    stems = render_stems(score, SAMPLE_RATE, render_seed)
    return Clip(mix(score, stems, tuple(parts)), score.tags(spec), score)


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into train/valid/test counts by largest remainder; a split with a
    positive fraction gets at least one item when there are enough items to go round."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"splits must be three non-negative fractions summing to 1, got {fractions}"
        )
    exact = [f * n for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= sum(f > 0 for f in fractions):
        for i in range(3):
            if fractions[i] > 0 and counts[i] == 0:
                counts[counts.index(max(counts))] -= 1
                counts[i] = 1
    return counts


def assign_splits(n: int, fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Each of ``n`` items' split: exact :func:`split_counts`, in an order shuffled by ``rng``."""
    labels = np.repeat(SPLITS, split_counts(n, fractions))
    return [str(label) for label in rng.permutation(labels)]


def _write_audio(path: Path, waveform: np.ndarray, audio_format: str) -> None:
    """Write a file atomically: a temporary name in the same folder, then rename."""
    container, subtype = AUDIO_FORMATS[audio_format]
    with atomic_path(path) as temporary:
        sf.write(temporary, waveform, SAMPLE_RATE, format=container, subtype=subtype)


def write_corpus(
    out_dir: str | os.PathLike,
    traditions: Sequence[str] = tuple(TRADITIONS),
    *,
    hours: float | None = None,
    clips_per_tradition: int | None = None,
    seed: int = 0,
    clip_seconds: float = 5.0,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
    audio_format: str = "flac",
    progress: bool = True,
) -> dict[str, Path]:
    """Write a corpus: audio under ``out_dir/<tradition>/``, one manifest per tradition
    (``<tradition>.jsonl``), ``all.jsonl`` for every clip, and ``details.jsonl`` with each
    clip's score. ``hours`` is the total size, shared evenly by the traditions; give it or
    ``clips_per_tradition``. Returns the manifest paths by tradition (and ``"all"``).
    """
    if (hours is None) == (clips_per_tradition is None):
        raise ValueError("give exactly one of hours and clips_per_tradition")
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format {audio_format!r}: choose from {', '.join(AUDIO_FORMATS)}")
    traditions = list(dict.fromkeys(get_tradition(name).name for name in traditions))
    if not traditions:
        raise ValueError("no traditions given")
    if clip_seconds * SAMPLE_RATE < MIN_SAMPLES:
        raise ValueError(f"clip_seconds {clip_seconds} is shorter than one encoder frame")
    if clips_per_tradition is None:
        if hours <= 0:
            raise ValueError(f"hours must be positive, got {hours}")
        clips_per_tradition = max(1, round(hours * 3600 / clip_seconds / len(traditions)))
    if clips_per_tradition < 1:
        raise ValueError(f"clips_per_tradition must be at least 1, got {clips_per_tradition}")
    split_counts(clips_per_tradition, splits)  # bad fractions fail before anything is written
    out_dir = Path(out_dir)

    manifests: dict[str, Path] = {}
    everything: list[Track] = []
    details: list[dict] = []
    bar = tqdm(total=clips_per_tradition * len(traditions), unit="clip", disable=not progress)
    for tradition in traditions:
        # Two-number entropy: a stream apart from every clip's three-number seed.
        shuffle = np.random.default_rng([seed, zlib.crc32(tradition.encode())])
        split_of = assign_splits(clips_per_tradition, splits, shuffle)
        (out_dir / tradition).mkdir(parents=True, exist_ok=True)
        tracks = []
        for index in range(clips_per_tradition):
            bar.set_postfix_str(tradition)
            clip = generate_clip(tradition, clip_seed(seed, tradition, index), clip_seconds)
            track_id = f"{tradition}-{index:05d}"
            relative = f"{tradition}/{track_id}.{audio_format}"
            _write_audio(out_dir / relative, clip.waveform, audio_format)
            tracks.append(
                Track(
                    track_id=track_id,
                    path=relative,
                    tags=clip.tags,
                    split=split_of[index],
                    tradition=tradition,
                    duration=len(clip.waveform) / SAMPLE_RATE,
                )
            )
            details.append({"track_id": track_id, **asdict(clip.details)})
            bar.update()
        manifests[tradition] = write_manifest(out_dir / f"{tradition}.jsonl", tracks)
        everything.extend(tracks)
    bar.close()
    manifests["all"] = write_manifest(out_dir / "all.jsonl", everything)
    _write_details(out_dir / "details.jsonl", details)
    return manifests


def _write_details(path: Path, rows: list[dict]) -> None:
    """Each clip's score as JSON lines (strokes left out: they follow from metre and tempo)."""
    lines = (
        json.dumps({k: v for k, v in row.items() if k != "strokes"}, ensure_ascii=False) + "\n"
        for row in rows
    )
    write_text(path, "".join(lines))
