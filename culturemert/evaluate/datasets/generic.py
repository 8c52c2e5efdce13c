"""Any tagging dataset given as a culturemert manifest (JSONL, CSV or TSV).

The folder holds ``manifest.jsonl`` (or ``.csv``/``.tsv``) with one row per track: ``track_id``,
``path`` (relative to the manifest or absolute), ``tags`` (``family--tag``; CSV joins them with
``|``), ``split`` (train/valid/test) and optionally ``group``. Tags without a family are filed
under ``tag--``. With no ``valid`` rows, about 10% of the training tracks become the validation
fold, whole groups at a time.
"""

from __future__ import annotations

from pathlib import Path

from culturemert.evaluate.datasets.base import (
    Dataset,
    DatasetError,
    check_splits,
    grouped_validation,
    make_dataset,
)
from culturemert.manifest import ManifestError, read_manifest

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv", "manifest.tsv")


def find_manifest(data_root: Path) -> Path:
    """``data_root`` itself when it is a file, else the first ``manifest.*`` inside it."""
    data_root = Path(data_root)
    if data_root.is_file():
        return data_root
    for name in MANIFEST_NAMES:
        if (data_root / name).is_file():
            return data_root / name
    expected = ", ".join(str(data_root / name) for name in MANIFEST_NAMES)
    raise DatasetError(f"generic: no manifest found; expected one of {expected}")


def build_generic(
    data_root: Path, top_n: int | None = None, valid_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """A dataset from a manifest; ``top_n=None`` keeps every tag seen in training."""
    manifest = find_manifest(data_root).resolve()
    try:
        tracks = read_manifest(manifest)
    except ManifestError as error:
        raise DatasetError(f"generic: {error}") from None
    for track in tracks:
        track.path = str(track.resolve(manifest.parent))
        track.tags = [tag if "--" in tag else f"tag--{tag}" for tag in track.tags]
    check_splits("generic", tracks)
    if not any(t.split == "valid" for t in tracks):
        grouped_validation(tracks, valid_fraction, seed)
    return make_dataset("generic", tracks, top_n=top_n)
