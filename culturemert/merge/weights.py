"""Checkpoint tensors read one at a time, and a safetensors file written one tensor at a time."""

from __future__ import annotations

import functools
import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from culturemert.digests import sha256_file

# Old torch.nn.utils.weight_norm names and the parametrization names that replaced them.
_WEIGHT_NORM_ALIASES = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES_BY_CODE = {code: dtype for dtype, code in _SAFETENSORS_DTYPES.items()}


class MergeInputError(ValueError):
    """Merge inputs that cannot be read or do not fit together; the message names them."""


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of a stored tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        """Number of elements."""
        return int(torch.Size(self.shape).numel())


@dataclass(frozen=True)
class WeightSource:
    """A checkpoint's tensors under canonical names, each read on demand."""

    directory: Path
    files: tuple[Path, ...]
    tensors: dict[str, TensorInfo]
    read: Callable[[str], Tensor]


def canonical_name(name: str) -> str:
    """The tensor's current name: ``weight_g``/``weight_v`` become ``parametrizations.weight.*``."""
    for old, new in _WEIGHT_NORM_ALIASES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def open_weights(directory: Path) -> WeightSource:
    """The weights of a Hugging Face-layout directory (safetensors, sharded or not, or ``.bin``)."""
    single, index, pickle = (
        directory / name
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )
    if single.is_file():
        return _safetensors_source(directory, [single])
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return _safetensors_source(directory, [directory / shard for shard in shards])
    if pickle.is_file():
        return _pickle_source(directory, pickle)
    raise MergeInputError(
        f"{directory}: no weights (looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin)"
    )


def _safetensors_source(directory: Path, files: list[Path]) -> WeightSource:
    locations: dict[str, tuple[Path, str]] = {}
    tensors: dict[str, TensorInfo] = {}
    spans: dict[tuple[Path, str], tuple[int, int]] = {}  # absolute byte range of each tensor
    for file in files:
        header, data_start = _safetensors_header(file)
        for stored, entry in header.items():
            if stored == "__metadata__":
                continue
            code = entry["dtype"]
            if code not in _DTYPES_BY_CODE:
                raise MergeInputError(
                    f"{file}: {stored} is stored as {code}, which merging does not support "
                    f"(supported: {', '.join(_DTYPES_BY_CODE)})"
                )
            info = TensorInfo(tuple(entry["shape"]), _DTYPES_BY_CODE[code])
            begin, end = entry["data_offsets"]
            spans[(file, stored)] = (data_start + begin, end - begin)
            _add_tensor(tensors, locations, stored, info, (file, stored), file)

    handles: dict[Path, Any] = {}

    def read(name: str) -> Tensor:
        # Positioned reads straight into the tensor's memory: unlike a memory map, nothing
        # stays resident after the tensor is dropped, and no page faults are paid per page.
        file, stored = locations[name]
        start, size = spans[(file, stored)]
        info = tensors[name]
        tensor = torch.empty(info.shape, dtype=info.dtype)
        if file not in handles:  # kept open for the merge; closed when the source is dropped
            handles[file] = open(file, "rb", buffering=0)  # noqa: SIM115
        handle = handles[file]
        handle.seek(start)
        if handle.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != size:
            raise MergeInputError(f"{file}: {stored} is cut short (truncated file?)")
        return tensor

    return WeightSource(directory, tuple(files), tensors, read)


def _safetensors_header(file: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where its data begins."""
    try:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 << 20:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
            ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"]
            size = os.fstat(handle.fileno()).st_size
            if size != 8 + length + max(ends, default=0):
                raise ValueError(f"{size} bytes, the header describes {8 + length + max(ends)}")
    except (OSError, ValueError, KeyError, struct.error) as error:
        raise MergeInputError(f"{file}: not a readable safetensors file ({error})") from error
    return header, 8 + length


def _pickle_source(directory: Path, file: Path) -> WeightSource:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise MergeInputError(f"{file}: not a readable state dict ({error})") from error
    tensors: dict[str, TensorInfo] = {}
    stored_names: dict[str, str] = {}
    for stored, tensor in state.items():
        info = TensorInfo(tuple(tensor.shape), tensor.dtype)
        _add_tensor(tensors, stored_names, stored, info, stored, file)
    return WeightSource(directory, (file,), tensors, lambda name: state[stored_names[name]])


def _add_tensor(
    tensors: dict[str, TensorInfo],
    locations: dict[str, object],
    stored: str,
    info: TensorInfo,
    location: object,
    file: Path,
) -> None:
    name = canonical_name(stored)
    if name in tensors:
        raise MergeInputError(f"{file}: {name} is stored twice (old and new weight-norm names)")
    tensors[name] = info
    locations[name] = location


def write_safetensors(
    path: Path,
    layout: dict[str, TensorInfo],
    tensors: Iterable[tuple[str, Tensor]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``tensors``, yielded in ``layout`` order, to a safetensors file as they come.

    The safetensors library only serialises a complete dict; this writes the header from the
    known layout first so that no more than one tensor is ever held.
    """
    header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, info in layout.items():
        size = info.numel * torch.empty((), dtype=info.dtype).element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[info.dtype],
            "shape": list(info.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
    expected = iter(layout.items())
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, tensor in tensors:
            want_name, info = next(expected)
            if name != want_name or tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
                raise ValueError(
                    f"{name} {tuple(tensor.shape)} does not match the layout's next entry"
                )
            file.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    if next(expected, None) is not None:
        raise ValueError(f"{path}: fewer tensors than the layout lists")


def memoised_sha256(path: Path) -> str:
    """Hex sha256 of a file's content (memoised per path, size and modification time: a λ
    sweep hashes the same inputs for every candidate)."""
    stat = path.stat()
    return _sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)
