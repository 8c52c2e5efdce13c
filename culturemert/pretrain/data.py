"""Training data: random crops from a mixture of manifests, each with its slice of teacher codes.

Sample ``i`` of a stage is a pure function of ``(seed, stage, i)``: a counter-based generator
picks the source (a tradition or the replay corpus) with the stage's probabilities, a track in
it with probability proportional to its duration (so every hour is equally likely), and a crop
start. Rank ``r`` of ``W`` takes micro-batches ``r, r + W, r + 2W, …`` of that sequence, so each
rank decodes only its share, the mixture holds in expectation on every rank, and resuming needs
only the number of micro-batches already consumed. Decoding happens in DataLoader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from culturemert.audio import AudioError, audio_duration, load_audio
from culturemert.devices import loader_start_method
from culturemert.frames import HOP_SAMPLES, SAMPLE_RATE
from culturemert.manifest import Track, read_manifest
from culturemert.pretrain.recipe import MixtureConfig
from culturemert.teachers.targets import TargetSet

log = logging.getLogger(__name__)

REPLAY = "replay"
LABEL_RATE = SAMPLE_RATE / HOP_SAMPLES  # 75 labels per second: label t pairs with frame t
#: Draws in a row that may hit unreadable files before the run gives up on its data.
MAX_ATTEMPTS = 64


class DataError(ValueError):
    """Training data that cannot be used; the message names the manifest, track or field."""


@dataclass(frozen=True)
class Source:
    """One component of a mixture: its tracks, their durations and its sampling probability."""

    name: str
    tracks: tuple[Track, ...]
    probability: float
    cumulative: np.ndarray = field(repr=False, compare=False)  # cumulative duration shares

    @classmethod
    def from_tracks(cls, name: str, tracks: Sequence[Track], probability: float) -> Source:
        """A source whose tracks are drawn in proportion to their durations."""
        durations = np.array([t.duration for t in tracks], dtype=np.float64)
        return cls(name, tuple(tracks), probability, np.cumsum(durations) / durations.sum())


def read_corpus(manifests: Sequence[str | Path]) -> list[Track]:
    """Tracks of one or more manifests, paths made absolute and missing durations read from headers."""
    tracks: list[Track] = []
    for manifest in manifests:
        root = Path(manifest).parent
        for track in read_manifest(manifest):
            path = track.resolve(root)
            duration = track.duration if track.duration else audio_duration(path)
            tracks.append(
                Track(
                    track_id=track.track_id,
                    path=str(path),
                    tradition=track.tradition,
                    duration=duration,
                )
            )
    return tracks


def mixture_sources(
    mixture: MixtureConfig,
    tracks: Sequence[Track],
    replay_tracks: Sequence[Track],
    crop_seconds: float,
    *,
    where: str = "mixture",
) -> list[Source]:
    """The sources of a stage's mixture with their probabilities (traditions, then replay).

    A list of traditions weighs each by its hours of usable audio (tracks at least one crop
    long); a mapping gives explicit ratios. ``replay`` takes its share off the top.
    """
    usable = [t for t in tracks if t.duration >= crop_seconds]
    by_tradition: dict[str, list[Track]] = {}
    for track in usable:
        by_tradition.setdefault(track.tradition or "", []).append(track)
    names = list(mixture.traditions)
    for name in names:
        if name not in by_tradition:
            known = ", ".join(sorted(k for k in by_tradition if k)) or "none"
            raise DataError(
                f"{where}.traditions: no track of tradition {name!r} at least {crop_seconds} s "
                f"long in the manifests (traditions found: {known})"
            )
    if isinstance(mixture.traditions, dict):
        weights = np.array([mixture.traditions[n] for n in names], dtype=np.float64)
    else:
        weights = np.array([sum(t.duration for t in by_tradition[n]) for n in names])
    shares = (1.0 - mixture.replay) * weights / weights.sum()
    sources = [
        Source.from_tracks(n, by_tradition[n], float(s))
        for n, s in zip(names, shares, strict=True)
        if s > 0
    ]
    if mixture.replay > 0:
        replay = [t for t in replay_tracks if t.duration >= crop_seconds]
        if not replay:
            raise DataError(
                f"{where}.replay: the replay manifest has no track at least {crop_seconds} s long"
            )
        sources.append(Source.from_tracks(REPLAY, replay, mixture.replay))
    return sources


def label_slice(codes: np.ndarray, start: int, length: int) -> np.ndarray:
    """Codes ``[K, n]`` for a crop of ``length`` samples at ``start``, padded with −1 past the end.

    As MERT's frame-label collater: ``codes[round(s·75/24000) : … + round(L·75/24000)]``.
    """
    first = round(start * LABEL_RATE / SAMPLE_RATE)
    count = round(length * LABEL_RATE / SAMPLE_RATE)
    piece = np.asarray(codes[:, first : first + count], dtype=np.int64)
    if piece.shape[1] < count:
        pad = np.full((piece.shape[0], count - piece.shape[1]), -1, dtype=np.int64)
        piece = np.concatenate([piece, pad], axis=1)
    return piece


def read_crop(path: str, start_fraction: float, crop_samples: int) -> tuple[np.ndarray, int]:
    """A mono float32 crop of ``crop_samples`` at 24 kHz and its start sample.

    The start is ``start_fraction`` of the way through the valid start positions. Files that
    libsndfile reads at 24 kHz are read in place; others (other rates, formats only FFmpeg
    reads) are decoded whole and resampled first (slow for long tracks: convert corpora to
    24 kHz FLAC once, as MERT's manifests do).
    """
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError):
        info = None  # load_audio tries FFmpeg, and names both decoders if it fails too
    in_place = info is not None and info.samplerate == SAMPLE_RATE
    if in_place:
        total = info.frames
    else:
        waveform = load_audio(path, SAMPLE_RATE)
        total = waveform.shape[0]
    if total < crop_samples:
        raise AudioError(path, f"shorter than one crop ({total} < {crop_samples} samples)")
    start = int(start_fraction * (total - crop_samples + 1))
    if not in_place:
        return waveform[start : start + crop_samples], start
    try:
        data, _ = sf.read(path, start=start, frames=crop_samples, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(path, f"cannot decode audio ({error})") from None
    crop = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if crop.shape[0] != crop_samples or not np.isfinite(crop).all():
        raise AudioError(path, "truncated or non-finite audio")
    return np.ascontiguousarray(crop), start


class CropDataset(Dataset):
    """``dataset[i]`` → the ``i``-th crop of a stage's sample sequence with its codes."""

    def __init__(
        self,
        sources: Sequence[Source],
        targets: TargetSet,
        crop_samples: int,
        seed: int,
        stage_index: int,
    ):
        self.sources = list(sources)
        self.targets = targets
        self.crop_samples = crop_samples
        self.seed = seed
        self.stage_index = stage_index
        self.source_cumulative = np.cumsum([s.probability for s in self.sources])
        self.source_cumulative /= self.source_cumulative[-1]
        self.unreadable: set[str] = set()  # per worker: files known to fail are not re-read

    def plan(self, index: int, attempt: int = 0) -> tuple[Source, Track, float]:
        """Source, track and crop-start fraction of draw ``attempt`` of sample ``index``."""
        rng = np.random.default_rng([self.seed, self.stage_index, index, attempt])
        u_source, u_track, start_fraction = rng.random(3)
        source = self.sources[int(np.searchsorted(self.source_cumulative, u_source, "right"))]
        track = source.tracks[int(np.searchsorted(source.cumulative, u_track, "right"))]
        return source, track, float(start_fraction)

    def __getitem__(self, index: int) -> dict:
        """Waveform ``[L]``, codes ``[K, n]`` and the unreadable files met on the way."""
        failed: list[str] = []
        for attempt in range(MAX_ATTEMPTS):
            source, track, start_fraction = self.plan(index, attempt)
            if track.path in self.unreadable:
                failed.append(track.path)
                continue
            try:
                waveform, start = read_crop(track.path, start_fraction, self.crop_samples)
            except AudioError as error:
                log.warning("skipping unreadable audio: %s", error)
                self.unreadable.add(track.path)
                failed.append(track.path)
                continue
            codes = label_slice(self.targets.codes(track.track_id), start, self.crop_samples)
            return {
                "waveform": torch.from_numpy(waveform),
                "codes": torch.from_numpy(codes),
                "source": source.name,
                "unreadable": failed,
            }
        raise DataError(
            f"{MAX_ATTEMPTS} draws in a row hit unreadable audio (last: {failed[-1]}); "
            "check the manifests"
        )


def collate(items: list[dict]) -> dict:
    """Stack crops into ``waveforms [B, L]`` and ``codes [B, K, n]``."""
    return {
        "waveforms": torch.stack([item["waveform"] for item in items]),
        "codes": torch.stack([item["codes"] for item in items]),
        "sources": [item["source"] for item in items],
        "unreadable": [path for item in items for path in item["unreadable"]],
    }


class RankBatchSampler(Sampler[list[int]]):
    """Micro-batches of global sample indices for one rank, from a resume position on."""

    def __init__(self, batch_size: int, start: int, stop: int, rank: int, world_size: int):
        self.batch_size = batch_size
        self.start, self.stop = start, stop  # micro-batch counters, per rank
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for micro in range(self.start, self.stop):
            first = (micro * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def crop_loader(
    dataset: CropDataset,
    batch_size: int,
    start: int,
    stop: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over micro-batches ``start … stop − 1`` of this rank's share."""
    return DataLoader(
        dataset,
        batch_sampler=RankBatchSampler(batch_size, start, stop, rank, world_size),
        collate_fn=collate,
        num_workers=num_workers,
        multiprocessing_context=loader_start_method(num_workers),
        pin_memory=torch.cuda.is_available(),
        # Crops do not depend on worker seeds; a private generator keeps the loader from drawing
        # on the global RNG, whose state a resumed run restores exactly.
        generator=torch.Generator().manual_seed(0),
    )


def check_targets(targets: TargetSet, tracks: Sequence[Track], where: str) -> None:
    """Stop before training when a track has no target file."""
    missing = [t.track_id for t in tracks if t.track_id not in targets.entries]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise DataError(
            f"{where}: {len(missing)} of {len(tracks)} tracks have no targets ({shown}); "
            "run `culturemert targets` on this manifest first"
        )
