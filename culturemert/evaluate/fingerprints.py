"""Content hashes that key the feature cache: an encoder's weights, a split's audio files.

Hashing a dataset's audio reads every byte of it, which for hundreds of hours takes longer than
probing. :class:`AudioHashes` remembers each file's sha256 with the size and modification time
it had, in a JSON file beside the cache, and hashes a file again only when one of them changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from culturemert.atomic import write_text
from culturemert.digests import sha256_file
from culturemert.manifest import Track

_HASHED_SUFFIXES = (".json", ".safetensors", ".bin")
# A file changed again within its modification-time tick would keep its time: hashes of files
# this recent are not remembered (git's "racy" rule).
_RACY_SECONDS = 2.0


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
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


class AudioHashes:
    """sha256 of files, re-computed only when a file's size or modification time changes.

    Remembered in ``file`` (JSON: absolute path -> ``[size, mtime_ns, sha256]``); with no file,
    nothing is remembered between runs.
    """

    def __init__(self, file: str | os.PathLike | None = None):
        self.file = None if file is None else Path(file)
        self._known: dict[str, list] = self._read()
        self._new: dict[str, list] = {}

    def _read(self) -> dict[str, list]:
        if self.file is None or not self.file.is_file():
            return {}
        try:
            found = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}  # a damaged store only costs re-hashing
        return found if isinstance(found, dict) else {}

    def digest(self, path: str | os.PathLike) -> str | None:
        """The file's sha256, or None when it does not exist."""
        key = os.path.abspath(path)
        try:
            stat = os.stat(key)
        except OSError:
            return None
        known = self._known.get(key)
        if known is not None and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            return known[2]
        value = sha256_file(key)
        entry = [stat.st_size, stat.st_mtime_ns, value]
        self._known[key] = entry
        if time.time() - stat.st_mtime_ns / 1e9 > _RACY_SECONDS:
            self._new[key] = entry
        return value

    def save(self) -> None:
        """Add the hashes computed since the last save to the file (other writers' kept)."""
        if self.file is None or not self._new:
            return
        merged = {**self._read(), **self._new}
        write_text(self.file, json.dumps(merged, separators=(",", ":")))
        self._new = {}


def audio_fingerprint(tracks: Sequence[Track], hashes: AudioHashes | None = None) -> str:
    """sha256 over the tracks' ids and audio contents, in order (a missing file as missing)."""
    hashes = hashes or AudioHashes()
    digest = hashlib.sha256()
    for track in tracks:
        digest.update(f"\0{track.track_id}\0{hashes.digest(track.path) or '<missing>'}".encode())
    hashes.save()
    return digest.hexdigest()
