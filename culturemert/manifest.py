"""Track manifests: one row per recording, as JSONL or CSV, shared by every part of the toolkit.

A row names a track and its audio file; the other fields are optional and used by whoever needs
them: ``tags`` (``family--tag`` strings) and ``split``/``group`` for evaluation, ``tradition`` and
``duration`` (seconds) for pre-training mixtures. Relative paths are relative to the manifest.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from culturemert.atomic import write_text


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and the row."""


@dataclass
class Track:
    """One recording in a manifest."""

    track_id: str
    path: str
    tags: list[str] = field(default_factory=list)
    split: str | None = None
    group: str | None = None
    tradition: str | None = None
    duration: float | None = None

    def resolve(self, root: str | os.PathLike) -> Path:
        """The audio path, made absolute against ``root`` (the manifest's folder) if relative."""
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else Path(root) / path


_PATH_COLUMNS = ("path", "audio_path", "file", "filename")
_ID_COLUMNS = ("track_id", "id")


def _track_from_row(row: dict, where: str) -> Track:
    path = next((row[c] for c in _PATH_COLUMNS if row.get(c) not in (None, "")), None)
    if path is None:
        raise ManifestError(f"{where}: no path column (one of {', '.join(_PATH_COLUMNS)})")
    track_id = next((row[c] for c in _ID_COLUMNS if row.get(c) not in (None, "")), None)
    tags = row.get("tags") or []
    if isinstance(tags, str):  # CSV: tags joined with '|'
        tags = [t for t in tags.split("|") if t]
    duration = row.get("duration")
    try:
        duration = float(duration) if duration not in (None, "") else None
    except ValueError:
        raise ManifestError(f"{where}: duration {duration!r} is not a number") from None
    return Track(
        track_id=str(track_id if track_id is not None else Path(str(path)).with_suffix("")),
        path=str(path),
        tags=[str(t) for t in tags],
        split=row.get("split") or None,
        group=row.get("group") or None,
        tradition=row.get("tradition") or None,
        duration=duration,
    )


def read_manifest(path: str | os.PathLike) -> list[Track]:
    """Read a ``.jsonl`` or ``.csv``/``.tsv`` manifest; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    tracks: list[Track] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{path}:{number}: not valid JSON ({error})") from None
                tracks.append(_track_from_row(row, f"{path}:{number}"))
    elif path.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle, delimiter=delimiter), start=2):
                tracks.append(_track_from_row(row, f"{path}:{number}"))
    else:
        raise ManifestError(f"{path}: unknown manifest format (use .jsonl, .csv or .tsv)")
    return tracks


def write_manifest(path: str | os.PathLike, tracks: Iterable[Track]) -> Path:
    """Write tracks as JSONL atomically (temporary file, then rename)."""
    rows = ({k: v for k, v in asdict(t).items() if v not in (None, [])} for t in tracks)
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
