"""FMA-medium: multi-label genre tagging (top 20) and the official 16-genre single-label task.

Folder layout (the ``fma_metadata.zip`` and ``fma_medium.zip`` archives of mdeff/fma)::

    fma_metadata/tracks.csv     three header rows; set.subset, set.split, track.genre_top,
                                track.genres_all (genre ids) per track
    fma_metadata/genres.csv     genre_id -> title
    split/{train,valid,test}.npy  optional: the random 70/10/20 split of pxaris/ccml
    audio/**/<track id>.mp3     e.g. audio/000/000002.mp3 (fma_medium's own layout)

``fma`` is the task of the cross-cultural tagging studies: every genre of a track at every level
of the hierarchy (``genre--Rock``, ``genre--Punk``...), top 20 on the training split, on ccml's
split when ``split/`` is present and FMA's official split otherwise. ``fma-genre-top`` is FMA's
own benchmark: one top-level genre per track, official split. ccml also ships a pickled
``split/metadata.npy``; the same labels are read from ``tracks.csv`` instead, so it is never
opened.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from culturemert.evaluate.datasets.base import (
    Dataset,
    DatasetError,
    audio_index,
    audio_path,
    make_dataset,
    require_files,
)
from culturemert.evaluate.datasets.ccml import SPLIT_FILES, read_split_ids
from culturemert.manifest import Track

TOP_N = 20
GENRE_TOP_CLASSES = 16
EXPECTED = ("fma_metadata/tracks.csv", "fma_metadata/genres.csv")
OFFICIAL_SPLITS = {"training": "train", "validation": "valid", "test": "test"}
MEDIUM = ("small", "medium")  # fma_medium contains fma_small


def read_medium_tracks(root: Path) -> dict[str, dict]:
    """FMA-medium rows of ``tracks.csv``: id (zero-padded to 6) -> split, genre_top, genres."""
    with (root / EXPECTED[1]).open(newline="", encoding="utf-8") as handle:
        titles = {row["genre_id"]: row["title"] for row in csv.DictReader(handle)}
    path = root / EXPECTED[0]
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        groups, fields = next(reader), next(reader)
        next(reader)  # the "track_id" row
        columns = {f"{g}.{f}": i for i, (g, f) in enumerate(zip(groups, fields, strict=True))}
        wanted = ("set.subset", "set.split", "track.genre_top", "track.genres_all")
        absent = [name for name in wanted if name not in columns]
        if absent:
            raise DatasetError(f"fma: {path}: columns {absent} not found (is this FMA tracks.csv?)")
        rows = {}
        for line, row in enumerate(reader, start=4):
            if row[columns["set.subset"]] not in MEDIUM:
                continue
            try:
                genre_ids = json.loads(row[columns["track.genres_all"]] or "[]")
                genres = [titles[str(g)] for g in genre_ids]
            except (json.JSONDecodeError, KeyError) as error:
                raise DatasetError(f"fma: {path}:{line}: bad track.genres_all ({error})") from None
            rows[row[0].zfill(6)] = {
                "split": OFFICIAL_SPLITS.get(row[columns["set.split"]]),
                "genre_top": row[columns["track.genre_top"]],
                "genres": genres,
            }
    return rows


def _tracks(root: Path, assignment: dict[str, str], tags: dict[str, list[str]]) -> list[Track]:
    audio_dir = root / "audio"
    index = audio_index(audio_dir)
    return [
        Track(track_id=i, path=audio_path(index, audio_dir, i), tags=tags[i], split=split)
        for i, split in assignment.items()
    ]


def build_fma(data_root: Path) -> Dataset:
    """Multi-label FMA-medium: all hierarchical genres, top 20, ccml's split when present."""
    root = Path(data_root).resolve()
    require_files("fma", root, EXPECTED)
    medium = read_medium_tracks(root)
    if all((root / f).is_file() for f in SPLIT_FILES):
        ids = read_split_ids("fma", root)
        assignment = {i: split for split, split_ids in ids.items() for i in split_ids}
        unknown = [i for i in assignment if i not in medium]
        if unknown:
            raise DatasetError(
                f"fma: {len(unknown)} ids of {root / 'split'} are not FMA-medium tracks of "
                f"tracks.csv, e.g. {unknown[:5]}"
            )
    else:
        assignment = {i: row["split"] for i, row in medium.items()}
    tags = {i: [f"genre--{g}" for g in medium[i]["genres"]] for i in assignment}
    return make_dataset("fma", _tracks(root, assignment, tags), top_n=TOP_N)


def build_fma_genre_top(data_root: Path) -> Dataset:
    """FMA-medium's official task: one of 16 top-level genres per track, official split."""
    root = Path(data_root).resolve()
    require_files("fma-genre-top", root, EXPECTED)
    medium = read_medium_tracks(root)
    labelled = {i: row for i, row in medium.items() if row["genre_top"]}
    assignment = {i: row["split"] for i, row in labelled.items()}
    tags = {i: [f"genre--{row['genre_top']}"] for i, row in labelled.items()}
    tracks = _tracks(root, assignment, tags)
    return make_dataset("fma-genre-top", tracks, top_n=GENRE_TOP_CLASSES)
