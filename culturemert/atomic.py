"""Writing files so that they appear whole or not at all: a temporary name, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _read_umask() -> int:
    # os.umask can only be read by setting it: do it once, at import, before threads start, so
    # that no file made by another thread is ever created under a zero mask.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def replace_directory(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` directory to ``target``, replacing an older one."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; it replaces ``target`` when the block
    succeeds and is removed when it fails."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes private folders
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)
    return Path(path)
