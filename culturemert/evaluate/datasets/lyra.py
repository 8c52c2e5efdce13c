"""Lyra (Greek traditional and folk music): metadata and the official split of pxaris/lyra-dataset.

Folder layout (the repository's ``data/`` folder plus your audio)::

    raw.tsv                 all pieces: id, instruments, genres, place, ..., youtube-id, start/end
    split/training.tsv      the official training pieces
    split/test.tsv          the official test pieces
    audio/<id>.<ext>        one file per piece, cut from the video at start-ts..end-ts

Tags are ``instruments--*``, ``genres--*`` and ``place--*`` (``place--None`` included, as in the
published results). Lyra has no validation fold: about 10% of the training pieces are moved to
``valid``, grouped by YouTube video, because pieces cut from one video share recording
conditions and would make validation optimistic.
"""

from __future__ import annotations

import csv
from pathlib import Path

from culturemert.evaluate.datasets.base import (
    Dataset,
    DatasetError,
    audio_index,
    audio_path,
    grouped_validation,
    make_dataset,
    require_files,
)
from culturemert.manifest import Track

TOP_N = 30
TAG_COLUMNS = ("instruments", "genres", "place")
EXPECTED = ("raw.tsv", "split/training.tsv", "split/test.tsv")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def build_lyra(data_root: Path, valid_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Lyra with the official train/test split and a validation fold grouped by video."""
    data_root = Path(data_root).resolve()
    require_files("lyra", data_root, EXPECTED)
    pieces = {row["id"]: row for row in _read_tsv(data_root / "raw.tsv")}
    audio_dir = data_root / "audio"
    index = audio_index(audio_dir)
    tracks = []
    for split, file in (("train", "split/training.tsv"), ("test", "split/test.tsv")):
        for row in _read_tsv(data_root / file):
            piece = pieces.get(row["id"])
            if piece is None:
                raise DatasetError(f"lyra: {data_root / file}: piece {row['id']!r} not in raw.tsv")
            tags = [
                f"{column}--{value}"
                for column in TAG_COLUMNS
                for value in piece[column].split("|")
                if value
            ]
            tracks.append(
                Track(
                    track_id=piece["id"],
                    path=audio_path(index, audio_dir, piece["id"]),
                    tags=tags,
                    split=split,
                    group=piece["youtube-id"],
                    duration=float(piece["end-ts"]) - float(piece["start-ts"]),
                )
            )
    grouped_validation(tracks, valid_fraction, seed)
    return make_dataset("lyra", tracks, top_n=TOP_N)
