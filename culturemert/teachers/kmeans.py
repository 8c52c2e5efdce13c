"""k-means teachers (HuBERT / MERT-v0 style): nearest centroid of standardised frame features.

A teacher holds one or several codebooks, each fitted with scikit-learn's ``MiniBatchKMeans``
on one feature set (``mfcc``, ``logmel``, ``chroma`` or a ``+``-joined mix such as
``logmel+chroma``). It is saved as a safetensors file (centroids and standardisation) whose
metadata carries the specification and the hash; nothing is pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin
from tqdm import tqdm

from culturemert.atomic import atomic_path
from culturemert.teachers.base import teacher_hash
from culturemert.teachers.features import FEATURE_KINDS, frame_features

FORMAT = "culturemert-kmeans-teacher"
#: Bump when frame features change: labels from older teachers would no longer match.
FEATURES_VERSION = 1


class TeacherFileError(ValueError):
    """A teacher file that cannot be used; the message names the file and the reason."""


@dataclass
class KMeansCodebook:
    """One codebook: centroids in the standardised space of its features."""

    features: str  # e.g. "mfcc" or "logmel+chroma"
    centroids: np.ndarray  # [k, dims]
    mean: np.ndarray  # [dims]
    scale: np.ndarray  # [dims]

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Nearest-centroid index of each ``[T, dims]`` feature row."""
        return pairwise_distances_argmin((features - self.mean) / self.scale, self.centroids)


def parse_codebook_spec(spec: str) -> tuple[str, int]:
    """``"mfcc:500"`` → ``("mfcc", 500)``; errors name the bad part."""
    features, _, k = spec.partition(":")
    unknown = [kind for kind in features.split("+") if kind not in FEATURE_KINDS]
    if not features or unknown:
        raise ValueError(
            f"codebook {spec!r}: unknown features {unknown or features!r} "
            f"(use {', '.join(FEATURE_KINDS)}, joined with '+')"
        )
    if not k.isdigit() or int(k) < 2:
        raise ValueError(f"codebook {spec!r}: expected FEATURES:K with K ≥ 2 clusters")
    return features, int(k)


class KMeansTeacher:
    """Codes from one or several k-means codebooks; ``teacher(waveform) → [codebooks, T]``."""

    kind = "kmeans"

    def __init__(self, codebooks: list[KMeansCodebook]):
        if not codebooks:
            raise ValueError("a k-means teacher needs at least one codebook")
        self.codebooks = codebooks
        self.codebook_sizes = [len(c.centroids) for c in codebooks]
        self.name = (
            "kmeans(" + ",".join(f"{c.features}:{len(c.centroids)}" for c in codebooks) + ")"
        )
        self.hash = teacher_hash(
            self.kind,
            self._params(),
            [a for c in codebooks for a in (c.centroids, c.mean, c.scale)],
        )

    def _params(self) -> dict:
        return {
            "features_version": FEATURES_VERSION,
            "codebooks": [{"features": c.features, "k": len(c.centroids)} for c in self.codebooks],
        }

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """int64 codes ``[codebooks, T]`` of a mono 24 kHz waveform."""
        features = _features_by_set(waveform, [c.features for c in self.codebooks])
        return np.stack([c.encode(features[c.features]) for c in self.codebooks]).astype(np.int64)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the teacher as one safetensors file, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, c in enumerate(self.codebooks):
            tensors[f"codebook.{i}.centroids"] = c.centroids.astype(np.float32)
            tensors[f"codebook.{i}.mean"] = c.mean.astype(np.float32)
            tensors[f"codebook.{i}.scale"] = c.scale.astype(np.float32)
        header = {"format": FORMAT, **self._params(), "name": self.name, "hash": self.hash}
        with atomic_path(path) as staging:
            save_file(tensors, staging, metadata={"culturemert": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> KMeansTeacher:
        """Read a teacher written by :meth:`save`, checking its format and hash."""
        path = Path(path)
        if not path.is_file():
            raise TeacherFileError(f"{path}: no such teacher file")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                header = json.loads((handle.metadata() or {}).get("culturemert", "{}"))
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        except (OSError, ValueError, SafetensorError) as error:
            raise TeacherFileError(f"{path}: not a k-means teacher file ({error})") from None
        if header.get("format") != FORMAT:
            raise TeacherFileError(
                f"{path}: not a k-means teacher file (format {header.get('format')!r})"
            )
        if header.get("features_version") != FEATURES_VERSION:
            raise TeacherFileError(
                f"{path}: made with frame features v{header.get('features_version')}, this version "
                f"computes v{FEATURES_VERSION}; fit the teacher again"
            )
        codebooks = [
            KMeansCodebook(
                features=spec["features"],
                centroids=tensors[f"codebook.{i}.centroids"],
                mean=tensors[f"codebook.{i}.mean"],
                scale=tensors[f"codebook.{i}.scale"],
            )
            for i, spec in enumerate(header["codebooks"])
        ]
        teacher = cls(codebooks)
        if teacher.hash != header.get("hash"):
            raise TeacherFileError(
                f"{path}: contents do not match the stored hash (file modified?)"
            )
        return teacher


def _features_by_set(waveform: np.ndarray, feature_sets: list[str]) -> dict[str, np.ndarray]:
    """Each distinct feature set's ``[T, dims]`` features, every kind computed once."""
    kinds = dict.fromkeys(kind for spec in feature_sets for kind in spec.split("+"))
    single = {kind: frame_features(waveform, kind) for kind in kinds}
    return {
        spec: np.concatenate([single[k] for k in spec.split("+")], axis=1) for spec in feature_sets
    }


def fit_kmeans_teacher(
    waveforms: Iterable[np.ndarray],
    codebooks: list[str],
    *,
    frames_per_track: int | None = None,
    max_frames: int = 100_000,
    seed: int = 0,
    progress: bool = True,
) -> KMeansTeacher:
    """Fit one ``MiniBatchKMeans`` per codebook spec (``"mfcc:500"``, ``"logmel+chroma:100"``).

    Frames are sampled uniformly: at most ``frames_per_track`` from each waveform, then at most
    ``max_frames`` overall. Features are standardised (per dimension) before clustering.
    """
    specs = [parse_codebook_spec(spec) for spec in codebooks]
    rng = np.random.default_rng(seed)
    collected: dict[str, list[np.ndarray]] = {features: [] for features, _ in specs}
    for waveform in tqdm(waveforms, desc="features", unit="track", disable=not progress):
        for features, rows in _features_by_set(waveform, list(collected)).items():
            if frames_per_track is not None and len(rows) > frames_per_track:
                rows = rows[rng.choice(len(rows), frames_per_track, replace=False)]
            collected[features].append(rows)
    fitted = []
    for features, k in specs:
        rows = np.concatenate(collected[features]) if collected[features] else np.empty((0, 0))
        if len(rows) > max_frames:
            rows = rows[rng.choice(len(rows), max_frames, replace=False)]
        if len(rows) < k:
            raise ValueError(
                f"codebook {features}:{k}: only {len(rows)} frames to fit {k} clusters"
            )
        mean = rows.mean(axis=0).astype(np.float32)
        scale = (rows.std(axis=0) + 1e-5).astype(np.float32)
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
        model.fit((rows - mean) / scale)
        fitted.append(
            KMeansCodebook(features, model.cluster_centers_.astype(np.float32), mean, scale)
        )
    return KMeansTeacher(fitted)
