"""Embedding a whole corpus: decode in worker processes, embed, write one file per track.

Output layout under ``out``: ``features/<track_id>.npy`` (float32 ``[layers, dims]`` or
``[layers, windows, dims]``), ``index.jsonl`` (one row per finished track), ``failures.tsv``
(every input that could not be used, with the reason) and ``settings.json``. Under ``torchrun``
each rank takes every ``world_size``-th track and writes ``index.rank<R>.jsonl`` and
``failures.rank<R>.tsv``. Re-running skips finished tracks; files appear only when complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from transformers import HubertModel

from culturemert.atomic import save_npy, write_text
from culturemert.audio import AudioError, audio_duration, find_audio_files, load_audio
from culturemert.embedding import Layers, embed
from culturemert.manifest import read_manifest
from culturemert.model.checkpoint import encoder_preprocessing

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


@dataclass(frozen=True)
class ExtractSettings:
    """How each track is embedded; recorded in ``settings.json`` so a resumed run matches."""

    model: str = ""
    dtype: str = "float32"
    layers: Layers = "all"
    pool: str = "mean"
    window_seconds: float | None = None
    drop_last: bool = False
    normalize: bool = False
    sample_rate: int = 24000


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
            (str(path.relative_to(source).with_suffix("")), path)
            for path in find_audio_files(source)
        ]
    if source.suffix.lower() in MANIFEST_SUFFIXES:
        return [(t.track_id, t.resolve(source.parent)) for t in read_manifest(source)]
    raise FileNotFoundError(f"{source}: not a folder or a .jsonl/.csv/.tsv manifest")


class _DecodedTracks(Dataset):
    """Decodes tracks in DataLoader workers; a bad file yields its error instead of a waveform."""

    def __init__(self, items: list[tuple[str, Path]], sample_rate: int, normalize: bool):
        self.items, self.sample_rate, self.normalize = items, sample_rate, normalize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            waveform = load_audio(self.items[index][1], self.sample_rate, normalize=self.normalize)
        except AudioError as error:
            return index, None, error.reason
        return index, waveform, None


def _check_settings(out: Path, settings: ExtractSettings) -> None:
    file = out / "settings.json"
    wanted = json.loads(json.dumps(asdict(settings)))
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
    encoder: HubertModel,
    items: list[tuple[str, Path]],
    out: str | os.PathLike,
    *,
    settings: ExtractSettings,
    num_workers: int = 1,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 8,
    progress: bool = True,
) -> ExtractReport:
    """Embed every track of this rank's share into ``out``, skipping finished ones."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    share = items[rank::world_size]
    feature_file = {track_id: out / "features" / f"{track_id}.npy" for track_id, _ in share}
    todo = [item for item in share if not feature_file[item[0]].is_file()]
    report = ExtractReport(skipped=len(share) - len(todo))

    loader = DataLoader(
        _DecodedTracks(todo, settings.sample_rate, settings.normalize),
        batch_size=None,
        num_workers=num_workers if todo else 0,
        prefetch_factor=4 if num_workers and todo else None,
    )
    seconds = [audio_duration(path) for _, path in todo]
    bar = tqdm(
        total=round(sum(seconds), 1),
        unit="audio-s",
        unit_scale=True,
        disable=not progress,
        desc=f"extract (rank {rank})" if world_size > 1 else "extract",
    )
    for index, waveform, error in loader:
        track_id, path = todo[index]
        if waveform is None:
            report.failures.append((str(path), error))
        else:
            features = embed(
                encoder,
                waveform,
                layers=settings.layers,
                pool=settings.pool,
                window_seconds=settings.window_seconds,
                drop_last=settings.drop_last,
                batch_size=batch_size,
            )
            save_npy(feature_file[track_id], features)
            report.done += 1
            report.audio_seconds += len(waveform) / settings.sample_rate
        bar.update(round(seconds[index], 1))
    bar.close()
    _write_index(out, share, feature_file, report, rank, world_size)
    return report


def _write_index(out, share, feature_file, report, rank, world_size) -> None:
    suffix = f".rank{rank}" if world_size > 1 else ""
    rows = []
    for track_id, path in share:
        file = feature_file[track_id]
        if file.is_file():
            shape = list(np.load(file, mmap_mode="r").shape)
            rows.append(
                {
                    "track_id": track_id,
                    "path": str(path),
                    "features": str(file.relative_to(out)),
                    "shape": shape,
                }
            )
    write_text(out / f"index{suffix}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    failures = "".join(f"{path}\t{reason}\n" for path, reason in report.failures)
    write_text(out / f"failures{suffix}.tsv", "path\treason\n" + failures)


def distributed_position() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` alone)."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def default_device(local_rank: int = 0) -> torch.device:
    """This process's GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); otherwise it is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def preprocessing_settings(encoder: HubertModel, normalize: bool | None) -> tuple[int, bool]:
    """The encoder's sample rate and normalisation, with ``normalize`` overriding when given."""
    preprocessing = encoder_preprocessing(encoder)
    chosen = preprocessing.do_normalize if normalize is None else normalize
    return preprocessing.sample_rate, chosen
