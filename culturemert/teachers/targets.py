"""Precomputed discrete targets: one ``.npy`` per track, tagged with the teacher that made it.

A target directory holds ``<track>.<hash12>.npy`` files (int16 ``[codebooks, T]`` for the whole
track, T = encoder frames) and ``index.json`` with the teacher's full hash, name and codebook
sizes, one entry per track, and the tracks whose audio could not be read. The hash in each file
name makes an interrupted run resumable: a file that exists with this teacher's tag is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from culturemert.atomic import save_npy, write_text
from culturemert.audio import AudioError, load_audio
from culturemert.frames import SAMPLE_RATE
from culturemert.manifest import Track
from culturemert.teachers.base import Teacher
from culturemert.teachers.kmeans import KMeansTeacher, fit_kmeans_teacher

INDEX_NAME = "index.json"
FORMAT = "culturemert-targets"
_HASH_TAG = 12  # hex digits of the teacher hash in each file name


class TargetsError(ValueError):
    """Targets that cannot be used for a run; the message says which and what to do."""


@dataclass
class TargetsSummary:
    """What one :func:`compute_targets` call did."""

    computed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # track_id → reason
    frames: int = 0


@dataclass
class TargetSet:
    """Loaded target index of one teacher: look up a track's codes with :meth:`codes`."""

    directory: Path
    teacher_hash: str
    teacher_name: str
    codebook_sizes: list[int]
    entries: dict[str, dict]  # track_id → {"file": name, "frames": T}
    failed: dict[str, str]  # tracks whose audio could not be read when targets were made
    missing: list[str]  # requested tracks without a target file

    def codes(self, track_id: str) -> np.ndarray:
        """The track's whole ``[codebooks, T]`` int16 codes (memory-mapped)."""
        return np.load(self.directory / self.entries[track_id]["file"], mmap_mode="r")


def target_filename(track_id: str, teacher_hash: str) -> str:
    """A safe, unique file name for a track's targets, tagged with the teacher hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", track_id).strip("._")[:80] or "track"
    digest = hashlib.sha1(track_id.encode()).hexdigest()[:8]  # keeps slugs that collide apart
    return f"{slug}-{digest}.{teacher_hash[:_HASH_TAG]}.npy"


def _read_index(directory: Path) -> dict | None:
    path = directory / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TargetsError(f"{path}: not valid JSON ({error})") from None
    if index.get("format") != FORMAT:
        raise TargetsError(f"{path}: not a culturemert target index")
    return index


def _existing_index(directory: Path) -> dict:
    index = _read_index(directory)
    if index is None:
        raise TargetsError(
            f"{directory}: no {INDEX_NAME}; compute targets first with "
            "`culturemert targets TEACHER MANIFEST --out DIR`"
        )
    return index


def targets_teacher(directory: str | os.PathLike) -> tuple[str, list[int]]:
    """The hash and codebook sizes of the teacher that made the targets in ``directory``."""
    index = _existing_index(Path(directory))
    return index["teacher_hash"], list(index["codebook_sizes"])


def _write_index(directory: Path, index: dict) -> None:
    text = json.dumps(index, indent=1, sort_keys=True)
    write_text(directory / INDEX_NAME, text)


def compute_targets(
    teacher: Teacher,
    tracks: list[Track],
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> TargetsSummary:
    """Label every track once with ``teacher``; resumes where an earlier run stopped.

    ``root`` resolves relative track paths (the manifest's folder). Unreadable audio is recorded
    in the index and skipped. A directory holding another teacher's targets is refused.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if max(teacher.codebook_sizes) > np.iinfo(np.int16).max + 1:
        raise ValueError(f"{teacher.name}: codebooks over 32768 codes do not fit int16 targets")
    index = _read_index(out_dir) or {
        "format": FORMAT,
        "teacher_hash": teacher.hash,
        "teacher_name": teacher.name,
        "codebook_sizes": list(teacher.codebook_sizes),
        "sample_rate": SAMPLE_RATE,
        "tracks": {},
        "failed": {},
    }
    if index["teacher_hash"] != teacher.hash:
        raise TargetsError(
            f"{out_dir}: holds targets of teacher {index['teacher_name']} "
            f"({index['teacher_hash'][:_HASH_TAG]}), not {teacher.name} ({teacher.hash[:_HASH_TAG]}); "
            "choose another --out directory"
        )
    summary = TargetsSummary()
    bar = tqdm(tracks, desc="targets", unit="track", disable=not progress)
    try:
        for track in bar:
            name = target_filename(track.track_id, teacher.hash)
            path = out_dir / name
            if path.is_file():  # this teacher's tag: computed by an earlier run
                frames = int(np.load(path, mmap_mode="r").shape[1])
                summary.skipped += 1
            else:
                try:
                    waveform = load_audio(track.resolve(root), SAMPLE_RATE)
                except AudioError as error:
                    summary.failed[track.track_id] = index["failed"][track.track_id] = error.reason
                    continue
                codes = teacher(waveform).astype(np.int16)
                save_npy(path, codes)
                frames = codes.shape[1]
                summary.computed += 1
            index["tracks"][track.track_id] = {"file": name, "frames": frames}
            index["failed"].pop(track.track_id, None)
            summary.frames += frames
    finally:  # also when interrupted; a killed run's files are found again by their tag
        _write_index(out_dir, index)
    return summary


def fit_kmeans_on_tracks(
    tracks: list[Track],
    root: str | os.PathLike,
    codebooks: list[str],
    *,
    fit_tracks: int | None = None,
    max_frames: int = 100_000,
    seed: int = 0,
    progress: bool = True,
) -> KMeansTeacher:
    """Fit a k-means teacher on ``fit_tracks`` random tracks (all by default), ≤ ``max_frames``.

    Frames are spread evenly over the chosen tracks; unreadable audio is skipped.
    """
    if not tracks:
        raise ValueError("no tracks to fit a k-means teacher on")
    rng = np.random.default_rng(seed)
    if fit_tracks is not None and fit_tracks < len(tracks):
        tracks = [tracks[i] for i in sorted(rng.choice(len(tracks), fit_tracks, replace=False))]

    def waveforms():
        for track in tracks:
            try:
                yield load_audio(track.resolve(root), SAMPLE_RATE)
            except AudioError:
                continue

    return fit_kmeans_teacher(
        waveforms(),
        codebooks,
        frames_per_track=-(-max_frames // len(tracks)),
        max_frames=max_frames,
        seed=seed,
        progress=progress,
    )


def load_targets(
    directory: str | os.PathLike,
    expected_teacher_hash: str,
    track_ids: list[str] | None = None,
    *,
    require_all: bool = True,
) -> TargetSet:
    """Open a target directory made by the expected teacher; refuse any other teacher's.

    With ``track_ids``, tracks without a target file are listed in ``missing`` and, with
    ``require_all``, raise :class:`TargetsError` naming them (tracks whose audio was unreadable
    when the targets were made are reported in ``failed`` instead).
    """
    directory = Path(directory)
    index = _existing_index(directory)
    if index["teacher_hash"] != expected_teacher_hash:
        raise TargetsError(
            f"{directory}: targets were made by teacher {index['teacher_name']} "
            f"(hash {index['teacher_hash'][:_HASH_TAG]}), but this run's teacher has hash "
            f"{expected_teacher_hash[:_HASH_TAG]}; recompute the targets with this run's teacher"
        )
    entries = {
        track_id: entry
        for track_id, entry in index["tracks"].items()
        if (directory / entry["file"]).is_file()
    }
    wanted = list(index["tracks"]) if track_ids is None else track_ids
    missing = [t for t in wanted if t not in entries and t not in index["failed"]]
    if missing and require_all:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise TargetsError(
            f"{directory}: {len(missing)} track(s) have no targets ({shown}); run "
            "`culturemert targets` again on the manifest to complete them"
        )
    return TargetSet(
        directory=directory,
        teacher_hash=index["teacher_hash"],
        teacher_name=index["teacher_name"],
        codebook_sizes=list(index["codebook_sizes"]),
        entries=entries,
        failed=dict(index["failed"]),
        missing=missing,
    )
