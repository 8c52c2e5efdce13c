"""Feature cache: every layer's pooled window features, extracted once per encoder, audio, settings.

An entry holds one split: ``features.npy`` (float16 ``[windows, layers, dims]``, opened as a
memory map), ``track_index.npy`` (window -> position in the entry's track list) and
``meta.json`` (track ids, tracks that could not be used and why, the key's ingredients). Its
name is a hash of the encoder's weights, the audio files' contents and the extraction settings
(:mod:`.fingerprints`), so a second evaluation of the same encoder on the same data reads it
back without opening an audio file, and any change to one of the three (the truncation of long
recordings included) gives a new entry. Features come from the toolkit's one extraction core,
:func:`culturemert.extract.embed_tracks`, on the cache's device. Entries are written to a
temporary folder and renamed into place, so an interrupted extraction leaves nothing
half-written.

Under ``torchrun`` every rank embeds its share of a split (every ``world_size``-th track) into a
shard; rank 0 waits for the shards and joins them, in the split's order, into the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from culturemert.atomic import atomic_directory
from culturemert.audio import AudioError, audio_duration
from culturemert.devices import distributed_position
from culturemert.evaluate.fingerprints import AudioHashes, audio_fingerprint, encoder_fingerprint
from culturemert.extract import ExtractSettings, embed_tracks
from culturemert.manifest import Track
from culturemert.model import Encoder, as_encoder, open_encoder, read_preprocessing

#: Bumped when the entry layout changes, so old entries are not misread.
FORMAT_VERSION = 2
HASHES_FILE = "audio-sha256.json"
_SHARD_POLL_SECONDS = 1.0


@dataclass
class SplitFeatures:
    """The cached features of one split, plus the tracks that could not be used."""

    features: np.ndarray  # [windows, layers, dims] float16, memory-mapped
    track_index: np.ndarray  # [windows] -> position in ``track_ids``
    track_ids: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # track id -> reason
    directory: Path | None = None

    def failure_summary(self, examples: int = 3) -> str:
        """One line: how many tracks were left out, with the first few reasons ('' if none)."""
        if not self.failed:
            return ""
        first = "; ".join(f"{tid}: {why}" for tid, why in list(self.failed.items())[:examples])
        more = "; ..." if len(self.failed) > examples else ""
        total = len(self.failed) + len(self.track_ids)
        return f"{len(self.failed)} of {total} tracks have unusable audio ({first}{more})"


def settings_for(
    source: str | os.PathLike | Encoder | torch.nn.Module,
    pool: str = "mean",
    window_seconds: float | None = 30.0,
    dtype: str = "float32",
) -> ExtractSettings:
    """Extraction settings with the sample rate and normalisation the checkpoint asks for.

    A loaded model keeps its own dtype; ``dtype`` is the one a folder's encoder is loaded in.
    """
    if isinstance(source, (Encoder, torch.nn.Module)):
        encoder = as_encoder(source)
        preprocessing = encoder.preprocessing
        dtype = str(encoder.dtype).removeprefix("torch.")
    else:
        preprocessing = read_preprocessing(source)
    return ExtractSettings(
        dtype=dtype,
        pool=pool,
        window_seconds=window_seconds,
        sample_rate=preprocessing.sample_rate,
        normalize=preprocessing.do_normalize,
    )


class FeatureCache:
    """Cached features of one encoder under one folder; the encoder is loaded only on a miss.

    A folder's encoder is loaded on ``device`` (default: this rank's GPU, else the CPU) in the
    settings' dtype; a loaded model runs where it is. ``workers`` processes decode audio.
    """

    def __init__(
        self,
        source: str | os.PathLike | Encoder | torch.nn.Module,
        cache_dir: str | os.PathLike,
        settings: ExtractSettings,
        *,
        device: str | torch.device | None = None,
        workers: int = 1,
        batch_size: int | None = None,
        progress: bool = True,
    ):
        self.source = source
        self.cache_dir = Path(cache_dir).expanduser()
        self.settings = settings
        self.device = device
        self.workers, self.batch_size = workers, batch_size
        self.progress = progress
        loaded = isinstance(source, (Encoder, torch.nn.Module))
        self._encoder = as_encoder(source) if loaded else None
        self.fingerprint = encoder_fingerprint(self._encoder.module if loaded else source)
        self.hashes = AudioHashes(self.cache_dir / HASHES_FILE)

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded from its folder the first time it is needed."""
        if self._encoder is None:
            from culturemert.devices import resolve_device

            device = resolve_device(self.device)
            self._encoder = open_encoder(self.source, dtype=self.settings.dtype, device=device)
        return self._encoder

    def entry(self, tracks: Sequence[Track], name: str, max_seconds: float | None = None) -> Path:
        """The cache folder of ``tracks`` (split ``name``, recordings cut after ``max_seconds``)
        for this encoder and these settings."""
        key = {
            "format": FORMAT_VERSION,
            "encoder": self.fingerprint,
            "audio": audio_fingerprint(tracks, self.hashes),
            "settings": asdict(replace(self.settings, max_seconds=max_seconds)),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{name}-{digest[:32]}"

    def features(
        self, tracks: Sequence[Track], name: str, max_seconds: float | None = None
    ) -> SplitFeatures:
        """Features of ``tracks``, each recording cut after ``max_seconds`` (None: whole):
        read from the cache, or extracted and stored first (on rank 0 under torchrun, with
        the other ranks' shares, see :meth:`contribute`)."""
        entry = self._entry_checked(tracks, name, max_seconds)
        if not (entry / "meta.json").is_file():
            rank, world_size, _ = distributed_position()
            if world_size == 1:
                with atomic_directory(entry) as staging:  # an interruption leaves no half entry
                    self._encode(staging, tracks, name, max_seconds)
            else:
                self._encode_share(entry, tracks, name, max_seconds, rank, world_size)
                self._join_shards(entry, tracks, name, max_seconds, world_size)
        return read_entry(entry)

    def contribute(self, tracks: Sequence[Track], name: str, max_seconds: float | None = None):
        """On a rank other than 0 under torchrun: embed this rank's share of a missing entry."""
        entry = self._entry_checked(tracks, name, max_seconds)
        if not (entry / "meta.json").is_file():
            rank, world_size, _ = distributed_position()
            self._encode_share(entry, tracks, name, max_seconds, rank, world_size)

    def _entry_checked(self, tracks, name, max_seconds) -> Path:
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"{name}: max_seconds must be positive or None, got {max_seconds}")
        return self.entry(tracks, name, max_seconds)

    def _meta(self, name: str, max_seconds: float | None, failed: dict) -> dict:
        return {
            "split": name,
            "failed": failed,
            "encoder": self.fingerprint,
            "settings": asdict(replace(self.settings, max_seconds=max_seconds)),
        }

    def _encode(
        self,
        folder: Path,
        tracks: Sequence[Track],
        name: str,
        max_seconds: float | None,
        rank: int | None = None,
    ) -> None:
        """Write an entry of ``tracks`` into the empty ``folder`` (a rank's shard: may be empty)."""
        settings = replace(self.settings, max_seconds=max_seconds)
        limit = np.inf if max_seconds is None else max_seconds
        seconds = [min(audio_duration(t.path), limit) for t in tracks]
        bar = tqdm(
            total=round(sum(seconds), 1),
            desc=f"features {name}" + ("" if rank is None else f" (rank {rank})"),
            unit="audio-s",
            unit_scale=True,
            disable=not self.progress,
        )
        failed: dict[str, str] = {}
        paths = [t.path for t in tracks]
        embedded = embed_tracks(
            self.encoder, paths, settings, workers=self.workers, batch_size=self.batch_size
        )
        with _EntryWriter(folder) as writer:
            for position, pooled, error in embedded:
                track = tracks[position]
                bar.update(round(seconds[position], 1))
                if pooled is None:
                    failed[track.track_id] = f"{track.path}: {error}"
                    continue
                blocks = pooled[:, None] if settings.window_seconds is None else pooled
                writer.add(track.track_id, blocks.transpose(1, 0, 2))
            bar.close()
            writer.finish(self._meta(name, max_seconds, failed), allow_empty=rank is not None)

    def _shard(self, entry: Path, rank: int, world_size: int) -> Path:
        return entry.with_name(f".{entry.name}.shards") / f"rank{rank}-of-{world_size}"

    def _encode_share(self, entry, tracks, name, max_seconds, rank, world_size) -> None:
        shard = self._shard(entry, rank, world_size)
        share = list(tracks)[rank::world_size]
        if share and not (shard / "meta.json").is_file():
            with atomic_directory(shard) as staging:
                self._encode(staging, share, name, max_seconds, rank)

    def _join_shards(self, entry, tracks, name, max_seconds, world_size) -> None:
        """Wait for every rank's shard, then write the entry with the tracks in split order."""
        shards = [self._shard(entry, r, world_size) for r in range(min(world_size, len(tracks)))]
        waiting = [s for s in shards if not (s / "meta.json").is_file()]
        if waiting and self.progress:
            print(
                f"{name}: waiting for {len(waiting)} rank(s) to embed their share", file=sys.stderr
            )
        while waiting:
            time.sleep(_SHARD_POLL_SECONDS)
            waiting = [s for s in waiting if not (s / "meta.json").is_file()]
        parts = [_read_shard(shard) for shard in shards]
        failed: dict[str, str] = {}
        with atomic_directory(entry) as staging, _EntryWriter(staging) as writer:
            for position, track in enumerate(tracks):
                part = parts[position % world_size]
                rows = part.rows.get(track.track_id)
                if rows is None:
                    failed[track.track_id] = part.failed.get(track.track_id, "not embedded")
                else:
                    writer.add(track.track_id, part.features[rows])
            writer.finish(self._meta(name, max_seconds, failed))
        shutil.rmtree(shards[0].parent, ignore_errors=True)


class _EntryWriter:
    """Appends each track's ``[windows, layers, dims]`` block, then writes the entry's files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.raw_file = folder / "features.raw"
        self.kept: list[str] = []
        self.track_index: list[int] = []
        self.block_shape: tuple[int, ...] | None = None

    def __enter__(self) -> _EntryWriter:
        self.raw = self.raw_file.open("wb")
        return self

    def __exit__(self, *exc) -> None:
        self.raw.close()
        self.raw_file.unlink(missing_ok=True)

    def add(self, track_id: str, blocks: np.ndarray) -> None:
        """One track's windows, stored as float16."""
        blocks = np.ascontiguousarray(blocks, dtype=np.float16)
        self.block_shape = blocks.shape[1:]
        self.raw.write(blocks.tobytes())
        self.track_index += [len(self.kept)] * len(blocks)
        self.kept.append(track_id)

    def finish(self, meta: dict, allow_empty: bool = False) -> None:
        """Write ``features.npy``, ``track_index.npy`` and ``meta.json`` (with the kept ids).

        Raises :class:`AudioError` when no track was kept, unless ``allow_empty``.
        """
        self.raw.close()
        meta = {**meta, "track_ids": self.kept}
        if self.kept:
            shape = (len(self.track_index), *self.block_shape)
            raw = np.memmap(self.raw_file, dtype=np.float16, mode="r", shape=shape)
            np.save(self.folder / "features.npy", raw)
            del raw
            np.save(self.folder / "track_index.npy", np.asarray(self.track_index, dtype=np.int64))
        elif not allow_empty:
            failed = meta["failed"]
            examples = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
            raise AudioError(
                meta["split"], f"none of the {len(failed)} tracks could be used ({examples})"
            )
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))


@dataclass
class _Shard:
    features: np.ndarray
    rows: dict[str, slice]  # track id -> its windows
    failed: dict[str, str]


def _read_shard(folder: Path) -> _Shard:
    meta = json.loads((folder / "meta.json").read_text())
    if not meta["track_ids"]:
        return _Shard(np.zeros((0,), np.float16), {}, meta["failed"])
    part = read_entry(folder)
    starts = np.searchsorted(part.track_index, np.arange(len(part.track_ids) + 1))
    rows = {tid: slice(int(starts[i]), int(starts[i + 1])) for i, tid in enumerate(part.track_ids)}
    return _Shard(part.features, rows, part.failed)


def read_entry(entry: Path) -> SplitFeatures:
    """Open a cache entry (features memory-mapped read-only); a damaged entry is a clear error."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        features = np.load(entry / "features.npy", mmap_mode="r")
        track_index = np.load(entry / "track_index.npy")
    except (OSError, ValueError, KeyError) as error:
        raise OSError(
            f"{entry}: damaged feature cache entry ({error}); delete it to re-extract"
        ) from None
    if len(features) != len(track_index):
        raise OSError(f"{entry}: damaged feature cache entry (features and index disagree)")
    return SplitFeatures(
        features=features,
        track_index=track_index,
        track_ids=meta["track_ids"],
        failed=meta["failed"],
        directory=entry,
    )
