"""Feature cache: every layer's pooled window features, extracted once per encoder, audio, settings.

An entry holds one split: ``features.npy`` (float16 ``[windows, layers, dims]``, opened as a
memory map), ``track_index.npy`` (window -> position in the entry's track list) and
``meta.json`` (track ids, tracks that could not be used and why, the key's ingredients). Its
name is a hash of the encoder's weights, the audio files' bytes and the extraction settings, so
a second evaluation of the same encoder on the same data reads it back instead of re-encoding,
and any change to one of the three (the truncation of long recordings included) gives a new
entry. Entries are written to a temporary folder
and renamed into place, so an interrupted extraction leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import HubertModel

from culturemert.atomic import atomic_directory
from culturemert.audio import AudioError, audio_duration, load_audio, normalize_waveform
from culturemert.embedding import embed
from culturemert.manifest import Track
from culturemert.model import encoder_preprocessing, load_encoder, read_preprocessing

#: Bumped when the entry layout changes, so old entries are not misread.
FORMAT_VERSION = 1
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExtractionSettings:
    """How waveforms become features: pooling, window length, the encoder's input format."""

    pool: str = "mean"
    window_seconds: float | None = 30.0
    sample_rate: int = 24000
    normalize: bool = False


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


def _hash_file(path: Path, digest) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def encoder_fingerprint(source: str | os.PathLike | torch.nn.Module) -> str:
    """sha256 of a checkpoint folder's config and weight files, or of a model's state dict."""
    digest = hashlib.sha256()
    if isinstance(source, torch.nn.Module):
        config = getattr(source, "config", None)
        if config is not None:
            digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(source.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    folder = Path(source)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _HASHED_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no config or weight files to fingerprint")
    for path in files:
        digest.update(path.name.encode())
        _hash_file(path, digest)
    return digest.hexdigest()


def audio_fingerprint(tracks: Sequence[Track]) -> str:
    """sha256 of the tracks' ids and audio bytes, in order (a missing file hashes as missing)."""
    digest = hashlib.sha256()
    for track in tracks:
        digest.update(f"\0{track.track_id}\0".encode())
        path = Path(track.path)
        if path.is_file():
            _hash_file(path, digest)
        else:
            digest.update(b"<missing>")
    return digest.hexdigest()


def settings_for(
    source: str | os.PathLike | HubertModel, pool: str = "mean", window_seconds: float | None = 30.0
) -> ExtractionSettings:
    """Extraction settings with the sample rate and normalisation the checkpoint asks for."""
    if isinstance(source, torch.nn.Module):
        preprocessing = encoder_preprocessing(source)
    else:
        preprocessing = read_preprocessing(source)
    return ExtractionSettings(
        pool=pool,
        window_seconds=window_seconds,
        sample_rate=preprocessing.sample_rate,
        normalize=preprocessing.do_normalize,
    )


class FeatureCache:
    """Cached features of one encoder under one folder; the encoder is loaded only on a miss."""

    def __init__(
        self,
        source: str | os.PathLike | HubertModel,
        cache_dir: str | os.PathLike,
        settings: ExtractionSettings,
        *,
        progress: bool = True,
    ):
        self.source = source
        self.cache_dir = Path(cache_dir).expanduser()
        self.settings = settings
        self.progress = progress
        self.fingerprint = encoder_fingerprint(source)
        self._encoder = source if isinstance(source, torch.nn.Module) else None

    @property
    def encoder(self) -> HubertModel:
        """The encoder, loaded from its folder the first time it is needed."""
        if self._encoder is None:
            self._encoder = load_encoder(self.source)
        return self._encoder

    def entry(self, tracks: Sequence[Track], name: str, max_seconds: float | None = None) -> Path:
        """The cache folder of ``tracks`` (split ``name``, recordings cut after ``max_seconds``)
        for this encoder and these settings."""
        key = {
            "format": FORMAT_VERSION,
            "encoder": self.fingerprint,
            "audio": audio_fingerprint(tracks),
            "settings": asdict(self.settings),
            "max_seconds": max_seconds,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{name}-{digest[:32]}"

    def features(
        self, tracks: Sequence[Track], name: str, max_seconds: float | None = None
    ) -> SplitFeatures:
        """Features of ``tracks``, each recording cut after ``max_seconds`` (None: whole):
        read from the cache, or extracted and stored first."""
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"{name}: max_seconds must be positive or None, got {max_seconds}")
        entry = self.entry(tracks, name, max_seconds)
        if not (entry / "meta.json").is_file():
            self._extract(tracks, name, entry, max_seconds)
        return read_entry(entry)

    def _extract(
        self, tracks: Sequence[Track], name: str, entry: Path, max_seconds: float | None
    ) -> None:
        with atomic_directory(entry) as staging:  # an interruption leaves no half entry
            shape, track_index, kept, failed = self._encode_to(
                staging / "features.raw", tracks, name, max_seconds
            )
            raw = np.memmap(staging / "features.raw", dtype=np.float16, mode="r", shape=shape)
            np.save(staging / "features.npy", raw)
            del raw
            (staging / "features.raw").unlink()
            np.save(staging / "track_index.npy", np.asarray(track_index, dtype=np.int64))
            meta = {
                "split": name,
                "track_ids": kept,
                "failed": failed,
                "encoder": self.fingerprint,
                "settings": asdict(self.settings),
                "max_seconds": max_seconds,
            }
            (staging / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))

    def _encode_to(
        self, raw_file: Path, tracks: Sequence[Track], name: str, max_seconds: float | None
    ):
        """Append each track's ``[windows, layers, dims]`` float16 block to ``raw_file``."""
        settings = self.settings
        limit = np.inf if max_seconds is None else max_seconds
        seconds = sum(min(audio_duration(t.path), limit) for t in tracks)
        bar = tqdm(
            total=round(seconds, 1),
            desc=f"features {name}",
            unit="audio-s",
            unit_scale=True,
            disable=not self.progress,
        )
        track_index: list[int] = []
        kept: list[str] = []
        failed: dict[str, str] = {}
        block_shape = None
        with raw_file.open("wb") as out:
            for track in tracks:
                try:
                    waveform = load_audio(track.path, settings.sample_rate)
                    if max_seconds is not None:
                        waveform = waveform[: round(max_seconds * settings.sample_rate)]
                    if settings.normalize:  # over the audio the encoder sees, as a cut file
                        waveform = normalize_waveform(waveform)
                    pooled = embed(
                        self.encoder,
                        waveform,
                        pool=settings.pool,
                        window_seconds=settings.window_seconds,
                    )
                except (AudioError, ValueError) as error:
                    failed[track.track_id] = str(error)
                    bar.update(round(min(audio_duration(track.path), limit), 1))
                    continue
                blocks = pooled[:, None] if settings.window_seconds is None else pooled
                blocks = np.ascontiguousarray(blocks.transpose(1, 0, 2), dtype=np.float16)
                block_shape = blocks.shape[1:]
                out.write(blocks.tobytes())
                track_index += [len(kept)] * len(blocks)
                kept.append(track.track_id)
                bar.update(round(len(waveform) / settings.sample_rate, 1))
        bar.close()
        if not kept:
            examples = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
            raise AudioError(name, f"none of the {len(tracks)} tracks could be used ({examples})")
        return (len(track_index), *block_shape), track_index, kept, failed


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
