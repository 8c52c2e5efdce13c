"""Embedding a corpus: decode in worker processes, embed, write one file per track.

:func:`embed_tracks` is the one extraction core of the toolkit: files are decoded (and cut and
normalised) in ``DataLoader`` worker processes ahead of the encoder, and their windows go
through :func:`culturemert.embedding.embed_stream` on the encoder's device and dtype. Both
:func:`extract_corpus` (``culturemert extract``) and the evaluation feature cache call it.

Output layout of :func:`extract_corpus` under ``out``: ``features/<name>.npy`` (float32
``[layers, windows, dims]``, or ``[layers, dims]`` for whole tracks; with ``pool: none``
``[layers, frames, dims]`` and ``timestamps/<name>.npy``, each frame's centre in seconds),
``index.jsonl`` (one row per finished track: its id, audio path, feature file and shape), ``failures.tsv`` (every input
that could not be used, with the reason) and ``settings.json``. File names come from track ids
made safe (:func:`feature_name`), so an id can never point outside ``out``. Under ``torchrun``
each rank takes every ``world_size``-th track and writes ``index.rank<R>.jsonl`` and
``failures.rank<R>.tsv``. Re-running skips finished tracks; files appear only when complete.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from culturemert.atomic import save_npy, write_text
from culturemert.audio import (
    AudioError,
    audio_duration,
    find_audio_files,
    load_audio,
    normalize_waveform,
)
from culturemert.devices import DTYPES, default_batch_size, loader_start_method
from culturemert.embedding import POOLS, Layers, embed_stream, frame_times
from culturemert.frames import MIN_SAMPLES, SAMPLE_RATE
from culturemert.manifest import read_manifest
from culturemert.model.encoder import Encoder, as_encoder

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
#: Default window: the evaluation protocol's (MARBLE's) 30 s. Longer inputs cost attention
#: quadratic in their length and lie far beyond MERT's 5 s training crops.
WINDOW_SECONDS = 30.0
_NAME_PART = 120  # characters kept of each folder or file name of a track id
FRAMES = "none"  # the pool setting that keeps every frame


@dataclass(frozen=True)
class ExtractSettings:
    """How each track becomes features; recorded beside extract's outputs and keyed in the cache."""

    dtype: str = "float32"
    layers: Layers = "all"
    pool: str = "mean"  # or "none": every frame, with its timestamp
    window_seconds: float | None = WINDOW_SECONDS  # None: each track whole
    drop_last: bool = False
    sample_rate: int = SAMPLE_RATE
    normalize: bool = False
    max_seconds: float | None = None  # only the first seconds of each recording (None: all)

    def __post_init__(self):
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.pool not in (*POOLS, FRAMES):
            choices = ", ".join((*POOLS, FRAMES))
            problems.append(f"pool must be one of {choices}, got {self.pool!r}")
        if self.drop_last and self.pool == FRAMES:
            problems.append("drop_last applies to pooled windows; frames always cover the track")
        for name in ("window_seconds", "max_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                problems.append(f"{name} must be positive or null, got {value!r}")
        if not isinstance(self.layers, (str, int)):
            object.__setattr__(self, "layers", list(self.layers))  # a list however given
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def frame_pool(self) -> str | None:
        """The pooling :func:`~culturemert.embedding.embed_stream` takes (None: frames)."""
        return None if self.pool == FRAMES else self.pool


@dataclass
class ExtractReport:
    """What one extraction run did."""

    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0


def collect_inputs(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(track_id, audio path)`` pairs from a folder (recursive) or a CSV/JSONL manifest."""
    source = Path(source)
    if source.is_dir():
        return [
            (path.relative_to(source).with_suffix("").as_posix(), path)
            for path in find_audio_files(source)
        ]
    if source.suffix.lower() in MANIFEST_SUFFIXES:
        return [(t.track_id, t.resolve(source.parent)) for t in read_manifest(source)]
    raise FileNotFoundError(f"{source}: not a folder or a .jsonl/.csv/.tsv manifest")


def feature_name(track_id: str) -> str:
    """A relative path for ``track_id``'s features that stays inside the output folder.

    Folders in the id are kept (a folder input keeps its layout); in each part, characters other
    than letters, digits, ``.``, ``-`` and ``_`` become ``_`` and leading dots go, so ``..``,
    absolute paths and hidden names cannot escape or hide.
    """
    parts = []
    for part in re.split(r"[/\\]+", track_id):
        part = re.sub(r"[^\w.-]+", "_", part).lstrip(".")[:_NAME_PART]
        if part:
            parts.append(part)
    return "/".join(parts) or "_"


def feature_names(items: Sequence[tuple[str, Path]]) -> dict[str, str]:
    """Each track id's :func:`feature_name`; ids that would share a file are a clear error."""
    names: dict[str, str] = {}
    owner: dict[str, tuple[str, Path]] = {}
    for track_id, path in items:
        name = feature_name(track_id)
        clash = owner.get(name.casefold())  # case-insensitive file systems would merge them
        if clash is not None:
            raise ValueError(
                f"tracks {clash[0]!r} ({clash[1]}) and {track_id!r} ({path}) would both be "
                f"written to features/{name}.npy; give them distinct ids"
            )
        owner[name.casefold()] = (track_id, path)
        names[track_id] = name
    return names


class _DecodedTracks(Dataset):
    """Decodes, cuts and normalises tracks in DataLoader workers; a bad file yields its reason."""

    def __init__(self, paths: Sequence[Path], settings: ExtractSettings):
        self.paths, self.settings = paths, settings

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        rate, path = self.settings.sample_rate, self.paths[index]
        try:
            waveform = load_audio(path, rate)
            if self.settings.max_seconds is not None:
                waveform = waveform[: round(self.settings.max_seconds * rate)]
                if len(waveform) < MIN_SAMPLES:
                    raise AudioError(path, f"under {MIN_SAMPLES} samples after the cut")
            if self.settings.normalize:  # over the audio the encoder sees, as of a cut file
                waveform = normalize_waveform(waveform)
        except AudioError as error:
            return index, None, error.reason
        return index, waveform, None


def embed_tracks(
    encoder: Encoder | nn.Module,
    paths: Sequence[str | os.PathLike],
    settings: ExtractSettings,
    *,
    workers: int = 1,
    batch_size: int | None = None,
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """``(position, features, error)`` for each file, in order: decoded by ``workers`` processes
    ahead of the encoder (0: in this one), embedded on the encoder's device.

    Features are float32 ``[layers, windows, dims]`` (``[layers, dims]`` without windows); a
    file that cannot be used gives ``(position, None, reason)``.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    encoder = as_encoder(encoder)
    device = encoder.device
    workers = workers if paths else 0  # no processes to start for nothing
    loader = DataLoader(
        _DecodedTracks([Path(p) for p in paths], settings),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        multiprocessing_context=loader_start_method(workers),
        pin_memory=device.type == "cuda",  # lets the copy to the GPU run asynchronously
    )
    reasons: dict[int, str] = {}

    def waveforms():
        for position, waveform, reason in loader:
            if reason is not None:
                reasons[position] = reason
            yield position, waveform

    for position, features, error in embed_stream(
        encoder,
        waveforms(),
        layers=settings.layers,
        pool=settings.frame_pool,
        window_seconds=settings.window_seconds,
        drop_last=settings.drop_last,
        batch_size=batch_size or default_batch_size(device, settings.window_seconds),
    ):
        yield position, features, reasons.pop(position, error)


def _check_settings(out: Path, wanted: dict) -> None:
    file = out / "settings.json"
    wanted = json.loads(json.dumps(wanted))
    if file.is_file():
        found = json.loads(file.read_text())
        if found != wanted:
            raise ValueError(
                f"{out}: holds features made with other settings ({found}); "
                f"use another --out or the same settings ({wanted})"
            )
    else:
        write_text(file, json.dumps(wanted, indent=2) + "\n")


def extract_corpus(
    encoder: Encoder | nn.Module,
    items: list[tuple[str, Path]],
    out: str | os.PathLike,
    *,
    settings: ExtractSettings,
    model: str = "",
    num_workers: int = 1,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int | None = None,
    progress: bool = True,
) -> ExtractReport:
    """Embed every track of this rank's share into ``out``, skipping finished ones."""
    out = Path(out)
    names = feature_names(items)  # before anything is written: a clash stops the run
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, {"model": model, **asdict(settings)})
    share = items[rank::world_size]
    feature_file = {track_id: out / "features" / f"{names[track_id]}.npy" for track_id, _ in share}
    times_file = {track_id: out / "timestamps" / f"{names[track_id]}.npy" for track_id, _ in share}
    todo = [item for item in share if not feature_file[item[0]].is_file()]
    report = ExtractReport(skipped=len(share) - len(todo))
    limit = np.inf if settings.max_seconds is None else settings.max_seconds
    seconds = [min(audio_duration(path), limit) for _, path in todo]
    bar = tqdm(
        total=round(sum(seconds), 1),
        unit="audio-s",
        unit_scale=True,
        disable=not progress,
        desc=f"extract (rank {rank})" if world_size > 1 else "extract",
    )
    tracks = embed_tracks(
        encoder, [path for _, path in todo], settings, workers=num_workers, batch_size=batch_size
    )
    for position, features, error in tracks:
        track_id, path = todo[position]
        if features is None:
            report.failures.append((str(path), error))
        else:
            if settings.pool == FRAMES:  # first, so a finished feature file always has its times
                times = frame_times(features.shape[1], settings.sample_rate)
                save_npy(times_file[track_id], times)
            save_npy(feature_file[track_id], features)
            report.done += 1
            report.audio_seconds += seconds[position]
        bar.update(round(seconds[position], 1))
    bar.close()
    frames = times_file if settings.pool == FRAMES else {}
    _write_index(out, share, feature_file, frames, report, rank, world_size)
    return report


def _write_index(out, share, feature_file, times_file, report, rank, world_size) -> None:
    suffix = f".rank{rank}" if world_size > 1 else ""
    rows = []
    for track_id, path in share:
        file = feature_file[track_id]
        if file.is_file():
            shape = list(np.load(file, mmap_mode="r").shape)
            row = {
                "track_id": track_id,
                "path": str(path),
                "features": file.relative_to(out).as_posix(),
                "shape": shape,
            }
            if track_id in times_file:
                row["timestamps"] = times_file[track_id].relative_to(out).as_posix()
            rows.append(row)
    write_text(out / f"index{suffix}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    failures = "".join(f"{path}\t{reason}\n" for path, reason in report.failures)
    write_text(out / f"failures{suffix}.tsv", "path\treason\n" + failures)
