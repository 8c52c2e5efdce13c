"""MagnaTagATune, top-50 tags, on the standard 15,244 / 1,529 / 4,332 split of Won et al.

Folder layout (the TagATune annotations, ``split/mtat/`` of minzwon/sota-music-tagging-models,
and the clips)::

    annotations_final.csv   clip_id, 188 tag columns (0/1), mp3_path
    tags.npy                the 50 tags of the split, in column order
    valid.npy, test.npy     "<index>\\t<mp3 path>" strings
    train.npy               optional, same format
    audio/<mp3_path>        e.g. audio/f/american_bach_soloists-...-30-59.mp3

The vocabulary is the split's own ``tags.npy`` list (tags as ``tag--guitar``): the split is
defined by it, and every published MTAT number uses it. Without ``train.npy`` the training
clips are rebuilt by the split's rule: folders 0-b, at least one of the 50 tags. The rule's
other condition (at least 29.1 s of audio) needs the audio, so the rebuilt training set can
hold a few more clips than 15,244.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from culturemert.evaluate.datasets.base import Dataset, DatasetError, make_dataset, require_files
from culturemert.manifest import Track

EXPECTED = ("annotations_final.csv", "tags.npy", "valid.npy", "test.npy")
TRAIN_FOLDERS = frozenset("0123456789ab")


def _read_clip_paths(file: Path) -> set[str]:
    entries = np.load(file, allow_pickle=False).tolist()
    return {str(entry).split("\t")[-1] for entry in entries}


def _read_annotations(file: Path) -> list[dict[str, str]]:
    with file.open(newline="", encoding="utf-8") as handle:
        delimiter = "\t" if "\t" in handle.readline() else ","
        handle.seek(0)
        rows = list(csv.DictReader(handle, delimiter=delimiter))
    if not rows or not {"clip_id", "mp3_path"} <= set(rows[0]):
        raise DatasetError(f"mtat: {file}: expected columns clip_id, <tags...>, mp3_path")
    return rows


def build_mtat(data_root: Path) -> Dataset:
    """MTAT top-50 with the standard split; the vocabulary is the split's ``tags.npy``."""
    root = Path(data_root).resolve()
    require_files("mtat", root, EXPECTED)
    names = [str(tag) for tag in np.load(root / "tags.npy", allow_pickle=False).tolist()]
    rows = _read_annotations(root / "annotations_final.csv")
    absent = [name for name in names if name not in rows[0]]
    if absent:
        raise DatasetError(f"mtat: tags {absent} of tags.npy are not columns of annotations")
    fixed = {
        "valid": _read_clip_paths(root / "valid.npy"),
        "test": _read_clip_paths(root / "test.npy"),
    }
    if (root / "train.npy").is_file():
        fixed["train"] = _read_clip_paths(root / "train.npy")
    split_of = {path: split for split, paths in fixed.items() for path in paths}
    tracks = []
    for row in rows:
        path = row["mp3_path"]
        tags = [f"tag--{name}" for name in names if row[name].strip() == "1"]
        split = split_of.get(path)
        if split is None and "train" not in fixed and path[:1] in TRAIN_FOLDERS and tags:
            split = "train"
        if split is not None:
            tracks.append(
                Track(
                    track_id=row["clip_id"], path=str(root / "audio" / path), tags=tags, split=split
                )
            )
    listed = {row["mp3_path"] for row in rows}
    unknown = [path for path in split_of if path not in listed]
    if unknown:
        raise DatasetError(
            f"mtat: {len(unknown)} clips of the split files are not in annotations_final.csv, "
            f"e.g. {unknown[:3]}"
        )
    return make_dataset("mtat", tracks, vocabulary=[f"tag--{name}" for name in names])
