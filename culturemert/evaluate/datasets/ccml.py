"""Turkish makam, Hindustani and Carnatic (CompMusic/Dunya) in the layout of pxaris/ccml.

Folder layout (``data/<name>/`` of a ccml checkout plus your metadata and audio)::

    split/train.npy, split/valid.npy, split/test.npy   recording MBIDs (the 70/10/20 split)
    split/metadata.json  or  split/metadata.csv         MBID -> tags, e.g. "makam--Hicaz"
    audio/**/<mbid>.<ext>                               one file per recording

The tags come from the Dunya API (makam: ``makam--``, ``usul--``, ``instrument--``; Hindustani
and Carnatic: ``raga--``, ``tala--``, ``instrument--``, ``form--``) and are not published, so
you supply them: JSON ``{"<mbid>": ["makam--Hicaz", ...]}`` or CSV with columns ``id,tags``
(tags joined with ``|``). ccml itself stores them as a pickled ``metadata.npy``; pickles can run
code when loaded, so that file is never opened here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from culturemert.evaluate.datasets.base import (
    SPLITS,
    Dataset,
    DatasetError,
    audio_index,
    audio_path,
    make_dataset,
    require_files,
)
from culturemert.manifest import Track

TOP_N = {"makam": 30, "hindustani": 20, "carnatic": 20}
#: Seconds of each recording that ccml (and so the paper's comparisons) use; some run for hours.
MAX_SECONDS = {"makam": 150.0, "hindustani": 780.0, "carnatic": 330.0}
SPLIT_FILES = tuple(f"split/{split}.npy" for split in SPLITS)
METADATA_FILES = ("split/metadata.json", "split/metadata.csv")


def _convert_hint(pickled: Path) -> str:
    return (
        f"{pickled} is a pickle, which can run arbitrary code when loaded, so it is not read. "
        "If you trust it, convert it once to JSON next to it:\n"
        '  python -c "import json, numpy as np; '
        f"json.dump(np.load('{pickled}', allow_pickle=True).item(), "
        f"open('{pickled.with_suffix('.json')}', 'w'))\""
    )


def read_split_ids(name: str, root: Path) -> dict[str, list[str]]:
    """The ccml id lists ``split/{train,valid,test}.npy`` (plain string arrays, no pickle)."""
    require_files(name, root, SPLIT_FILES)
    ids = {}
    for split, file in zip(SPLITS, SPLIT_FILES, strict=True):
        try:
            ids[split] = [str(i) for i in np.load(root / file, allow_pickle=False).tolist()]
        except ValueError as error:
            raise DatasetError(f"{name}: {root / file}: not a plain id array ({error})") from None
    return ids


def read_tag_metadata(name: str, root: Path) -> dict[str, list[str]]:
    """Tags per id from ``split/metadata.json`` or ``split/metadata.csv``."""
    json_file, csv_file = (root / f for f in METADATA_FILES)
    if json_file.is_file():
        try:
            raw = json.loads(json_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{name}: {json_file}: not valid JSON ({error})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{name}: {json_file}: expected an object mapping id -> tag list")
        return {str(key): [str(t) for t in (tags or [])] for key, tags in raw.items()}
    if csv_file.is_file():
        with csv_file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not {"id", "tags"} <= set(reader.fieldnames or ()):
                raise DatasetError(f"{name}: {csv_file}: expected columns 'id' and 'tags'")
            return {row["id"]: [t for t in row["tags"].split("|") if t] for row in reader}
    pickled = root / "split/metadata.npy"
    if pickled.is_file():
        raise DatasetError(f"{name}: no tag metadata in JSON or CSV. {_convert_hint(pickled)}")
    expected = " or ".join(str(root / f) for f in METADATA_FILES)
    raise DatasetError(f"{name}: no tag metadata; expected {expected} (id -> tags)")


def build_ccml_dataset(name: str, data_root: Path) -> Dataset:
    """One of the Dunya corpora from its ccml split files and your tag metadata."""
    data_root = Path(data_root).resolve()
    ids = read_split_ids(name, data_root)
    metadata = read_tag_metadata(name, data_root)
    unlabelled = [i for split_ids in ids.values() for i in split_ids if i not in metadata]
    if unlabelled:
        raise DatasetError(
            f"{name}: {len(unlabelled)} ids of the split have no entry in the tag metadata, "
            f"e.g. {unlabelled[:5]}"
        )
    audio_dir = data_root / "audio"
    index = audio_index(audio_dir)
    tracks = [
        Track(track_id=i, path=audio_path(index, audio_dir, i), tags=metadata[i], split=split)
        for split, split_ids in ids.items()
        for i in split_ids
    ]
    return make_dataset(name, tracks, top_n=TOP_N[name], max_seconds=MAX_SECONDS[name])


def build_makam(data_root: Path) -> Dataset:
    """Turkish makam (tags ``makam--``, ``usul--``, ``instrument--``; top 30; first 150 s)."""
    return build_ccml_dataset("makam", data_root)


def build_hindustani(data_root: Path) -> Dataset:
    """Hindustani (tags ``raga--``, ``tala--``, ``instrument--``, ``form--``; top 20; 780 s)."""
    return build_ccml_dataset("hindustani", data_root)


def build_carnatic(data_root: Path) -> Dataset:
    """Carnatic (tags ``raga--``, ``tala--``, ``instrument--``, ``form--``; top 20; 330 s)."""
    return build_ccml_dataset("carnatic", data_root)
