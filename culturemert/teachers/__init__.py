"""Teachers: frozen labellers whose targets the encoder learns to predict.

Discrete teachers (k-means codes, EnCodec codes) follow :class:`Teacher`: ``name``, ``hash``
(sha256 of kind, parameters and weights), ``codebook_sizes`` and ``teacher(waveform) → int64
[codebooks, T]`` at the encoder's 75 Hz frames. The CQT target is computed on the fly by
:class:`CQTTarget`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from culturemert.frames import HOP_SAMPLES, SAMPLE_RATE, encoder_frames
from culturemert.teachers.base import Teacher, teacher_hash
from culturemert.teachers.cqt import CQTTarget
from culturemert.teachers.encodec import EncodecTeacher
from culturemert.teachers.kmeans import (
    KMeansTeacher,
    TeacherFileError,
    fit_kmeans_teacher,
    parse_codebook_spec,
)

#: ``KIND:ARGUMENT`` prefixes understood by :func:`load_teacher`.
TEACHER_KINDS: dict[str, Callable[..., Teacher]] = {
    "kmeans": KMeansTeacher.load,
    "encodec": EncodecTeacher,
}


def load_teacher(spec: str, **options) -> Teacher:
    """A teacher from ``kmeans:FILE``, ``encodec:DIR`` or a bare k-means teacher file path.

    ``options`` go to the teacher's constructor (e.g. ``bandwidth`` or ``device`` for EnCodec).
    """
    kind, sep, argument = spec.partition(":")
    if sep and kind in TEACHER_KINDS:
        return TEACHER_KINDS[kind](argument, **options)
    if Path(spec).is_file():
        return KMeansTeacher.load(spec)
    raise ValueError(
        f"teacher {spec!r}: expected a k-means teacher file, kmeans:FILE or encodec:DIR "
        f"(kinds: {', '.join(TEACHER_KINDS)})"
    )


__all__ = [
    "CQTTarget",
    "EncodecTeacher",
    "HOP_SAMPLES",
    "KMeansTeacher",
    "SAMPLE_RATE",
    "TEACHER_KINDS",
    "Teacher",
    "TeacherFileError",
    "encoder_frames",
    "fit_kmeans_teacher",
    "load_teacher",
    "parse_codebook_spec",
    "teacher_hash",
]
