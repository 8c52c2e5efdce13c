"""A tagging dataset as the evaluation sees it: tracks with splits, and a fixed tag vocabulary.

Every adapter turns a dataset's own metadata into this one shape. Tags are ``family--tag``
strings; the vocabulary (the probe's output columns) is the top-N tags counted on the training
split only, as in the cross-cultural tagging studies, so valid and test never leak into it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from culturemert.atomic import atomic_directory
from culturemert.audio import find_audio_files
from culturemert.manifest import ManifestError, Track, read_manifest, write_manifest

SPLITS = ("train", "valid", "test")
MANIFEST_FILE = "manifest.jsonl"
VOCABULARY_FILE = "vocabulary.json"


class DatasetError(ValueError):
    """A dataset that cannot be built; the message names the files expected and where."""


@dataclass
class Dataset:
    """Tracks (all splits), the tag vocabulary, and the ids of tracks whose audio is missing.

    ``tracks`` is the dataset as published, whether or not the audio is on disk; ``missing``
    lists the ids of listed tracks without an audio file, so a partial copy is reported rather
    than silently shrunk. :meth:`split` returns only the tracks that can be evaluated.
    ``max_seconds`` is how much of each recording the published evaluation encodes (None: all).
    """

    name: str
    tracks: list[Track]
    vocabulary: list[str]
    missing: list[str] = field(default_factory=list)
    max_seconds: float | None = None

    def split(self, name: str) -> list[Track]:
        """Tracks of split ``name`` (train/valid/test) whose audio file exists."""
        if name not in SPLITS:
            raise DatasetError(f"{self.name}: unknown split {name!r} (one of {', '.join(SPLITS)})")
        absent = set(self.missing)
        return [t for t in self.tracks if t.split == name and t.track_id not in absent]

    def label_matrix(self, tracks: Sequence[Track]) -> np.ndarray:
        """0/1 matrix ``[len(tracks), len(vocabulary)]``; tags outside the vocabulary are ignored."""
        column = {tag: i for i, tag in enumerate(self.vocabulary)}
        labels = np.zeros((len(tracks), len(self.vocabulary)), dtype=np.float32)
        for row, track in enumerate(tracks):
            for tag in track.tags:
                if tag in column:
                    labels[row, column[tag]] = 1.0
        return labels

    def missing_summary(self, examples: int = 5) -> str:
        """One line: how many listed tracks have no audio, with the first few ids."""
        if not self.missing:
            return f"{self.name}: all {len(self.tracks)} listed tracks have audio"
        first = ", ".join(self.missing[:examples])
        more = ", ..." if len(self.missing) > examples else ""
        return (
            f"{self.name}: {len(self.missing)} of {len(self.tracks)} listed tracks have no audio "
            f"file ({first}{more})"
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``manifest.jsonl`` and ``vocabulary.json`` into ``directory`` as one atomic step."""
        target = Path(directory)
        with atomic_directory(target) as staging:
            write_manifest(staging / MANIFEST_FILE, self.tracks)
            payload = {
                "name": self.name,
                "vocabulary": self.vocabulary,
                "max_seconds": self.max_seconds,
            }
            text = json.dumps(payload, ensure_ascii=False, indent=1)
            (staging / VOCABULARY_FILE).write_text(text)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Dataset:
        """Read a dataset written by :meth:`save`; audio presence is checked again."""
        directory = Path(directory)
        vocabulary_file = directory / VOCABULARY_FILE
        if not vocabulary_file.is_file() or not (directory / MANIFEST_FILE).is_file():
            raise DatasetError(
                f"{directory}: expected {MANIFEST_FILE} and {VOCABULARY_FILE} (a saved dataset)"
            )
        payload = json.loads(vocabulary_file.read_text())
        try:
            tracks = read_manifest(directory / MANIFEST_FILE)
        except ManifestError as error:
            raise DatasetError(str(error)) from None
        return make_dataset(
            payload["name"],
            tracks,
            vocabulary=payload["vocabulary"],
            max_seconds=payload.get("max_seconds"),
        )


def top_tags(tracks: Iterable[Track], n: int | None) -> list[str]:
    """The ``n`` most frequent tags (each counted once per track); ties in alphabetical order."""
    counts = Counter(tag for track in tracks for tag in set(track.tags))
    ranked = sorted(counts, key=lambda tag: (-counts[tag], tag))
    return ranked if n is None else ranked[:n]


def check_splits(name: str, tracks: Sequence[Track]) -> None:
    """Raise a :class:`DatasetError` when a track's split is not train, valid or test."""
    bad = Counter(t.split for t in tracks if t.split not in SPLITS)
    if bad:
        found = ", ".join(f"{split!r} ({count} tracks)" for split, count in bad.items())
        raise DatasetError(
            f"{name}: split values must be one of {', '.join(SPLITS)}; found {found}"
        )


def make_dataset(
    name: str,
    tracks: list[Track],
    *,
    top_n: int | None = None,
    vocabulary: list[str] | None = None,
    max_seconds: float | None = None,
) -> Dataset:
    """Check the splits, build the vocabulary from the training split, and find missing audio."""
    check_splits(name, tracks)
    ids = Counter(t.track_id for t in tracks)
    repeated = [track_id for track_id, count in ids.items() if count > 1]
    if repeated:
        raise DatasetError(f"{name}: {len(repeated)} track ids appear twice, e.g. {repeated[:5]}")
    if vocabulary is None:
        vocabulary = top_tags((t for t in tracks if t.split == "train"), top_n)
    if not vocabulary:
        raise DatasetError(f"{name}: the training split has no tags, so there is nothing to probe")
    missing = [t.track_id for t in tracks if not Path(t.path).is_file()]
    return Dataset(name, tracks, list(vocabulary), missing, max_seconds)


def require_files(name: str, root: Path, relative: Sequence[str]) -> None:
    """Raise a :class:`DatasetError` listing every expected file that ``root`` lacks."""
    absent = [path for path in relative if not (root / path).is_file()]
    if absent:
        expected = "\n".join(
            f"  {root / path}" + ("  (missing)" if path in absent else "") for path in relative
        )
        raise DatasetError(f"{name}: {root} is not a {name} folder; expected:\n{expected}")


def audio_index(audio_dir: Path) -> dict[str, Path]:
    """Audio files below ``audio_dir`` (any sub-folder) by file name without extension."""
    if not audio_dir.is_dir():
        return {}
    index: dict[str, Path] = {}
    for path in find_audio_files(audio_dir):
        index.setdefault(path.stem, path)
    return index


def audio_path(index: dict[str, Path], audio_dir: Path, track_id: str) -> str:
    """The audio file of ``track_id``; when absent, the name it is expected under (no extension)."""
    return str(index.get(track_id, audio_dir / track_id))


def grouped_validation(tracks: list[Track], fraction: float = 0.1, seed: int = 0) -> None:
    """Move about ``fraction`` of the training tracks to ``valid``, whole groups at a time.

    Tracks cut from one recording session or video share a group; keeping a group in one fold
    stops the probe from being selected on near-duplicates of its training data. Tracks without
    a group form groups of their own.
    """
    from sklearn.model_selection import GroupShuffleSplit

    train = [t for t in tracks if t.split == "train"]
    groups = [t.group or f"track:{t.track_id}" for t in train]
    if len(set(groups)) < 2:
        raise DatasetError("cannot carve a validation fold: the training split has < 2 groups")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, valid_rows = next(splitter.split(train, groups=groups))
    for row in valid_rows:
        train[row].split = "valid"
