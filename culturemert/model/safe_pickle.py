"""Reading torch pickles that hold more than tensors, without running anything they name.

fairseq checkpoints pickle their configuration as omegaconf ``DictConfig`` trees (older ones as
an ``argparse.Namespace``). They load through torch's own ``weights_only`` unpickler, with each
config class they name mapped to an inert stand-in that only keeps what the pickle gives it;
:func:`plain` turns the stand-ins into dicts, lists and values. Any other global (``os.system``,
``builtins.eval``, a model class) is refused before unpickling starts, naming the global.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

# Config classes stand in for these modules' names: fairseq and its user dirs, omegaconf, hydra,
# and typing (omegaconf records annotations such as ``typing.Any``). A stand-in runs nothing.
_STAND_IN_MODULES = ("omegaconf", "fairseq", "mert_fairseq", "examples", "hydra", "typing")
_STAND_IN_NAMES = frozenset(
    {
        "argparse.Namespace",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
    }
)
# omegaconf records value types in its metadata; these constructors are harmless to call.
_PLAIN_TYPES = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, str, int, float, bool)}


class RefusedPickleError(ValueError):
    """A pickle naming a global that is not data, or one torch's unpickler cannot read."""


class StandIn:
    """An inert object in place of a pickled config class: it keeps its arguments and state."""

    pickled_as = ""  # the class's ``module.qualname`` in the pickle

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        instance = super().__new__(cls)
        instance.args, instance.state = args, None
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


_stand_ins: dict[str, type[StandIn]] = {}


def stand_in(full_name: str) -> type[StandIn]:
    """The stand-in class for ``module.qualname`` (one per name, so each keeps its identity)."""
    if full_name not in _stand_ins:
        name = full_name.rsplit(".", 1)[-1]
        _stand_ins[full_name] = type(name, (StandIn,), {"pickled_as": full_name})
    return _stand_ins[full_name]


def may_stand_in(full_name: str) -> bool:
    """Whether a pickled global is a config class (or value type) that loads as a stand-in."""
    module, name = full_name.split(".", 1)[0], full_name.rsplit(".", 1)[-1]
    if full_name in _STAND_IN_NAMES or full_name in _PLAIN_TYPES or module in _STAND_IN_MODULES:
        return True
    # fairseq imports a --user-dir under the folder's own name: its dataclass configs (MERT's
    # MERTConfig, MERTPretrainingConfig) can live in any module. A stand-in runs nothing.
    return name.endswith("Config") and name.isidentifier()


def unsafe_globals(path: str | os.PathLike) -> list[str]:
    """The globals a zip-format torch file names beyond torch's ``weights_only`` allow-list
    (read statically: nothing is unpickled)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise RefusedPickleError(
            f"{path}: not a zip-format torch checkpoint (torch.save has written those since "
            "torch 1.6); older formats are not read"
        )
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as error:  # a damaged archive or pickle
        raise RefusedPickleError(
            f"{path}: cannot be read as a torch checkpoint ({error})"
        ) from None


def check_weights_only(path: str | os.PathLike) -> None:
    """Refuse a torch file that names any global beyond tensors and plain containers."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return  # torch's weights_only unpickler guards older formats itself
    refused = unsafe_globals(path)
    if refused:
        raise RefusedPickleError(_refusal(path, refused, "a weights file may hold only tensors"))


def load_with_stand_ins(path: str | os.PathLike) -> Any:
    """``torch.load`` a checkpoint with config classes as :class:`StandIn` objects, memory-mapped."""
    path = Path(path)
    names = unsafe_globals(path)
    refused = [name for name in names if not may_stand_in(name)]
    if refused:
        raise RefusedPickleError(
            _refusal(path, refused, "a checkpoint may hold only tensors, containers and configs")
        )
    allowed = [(_PLAIN_TYPES.get(name) or stand_in(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise RefusedPickleError(f"{path}: {first_reason(error)}") from None


def plain(value: Any) -> Any:
    """Config stand-ins as plain data: DictConfig and Namespace → dict, ListConfig → list,
    omegaconf nodes and enum members → their values, class references → their names."""
    if isinstance(value, type) and issubclass(value, StandIn):
        return value.pickled_as
    if isinstance(value, StandIn):
        state = value.state
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if value.pickled_as.startswith("omegaconf.") and isinstance(state, dict):
            if "_content" in state:  # DictConfig, ListConfig (``_parent`` links upwards: skipped)
                return plain(state["_content"])
            if "_val" in state:  # a value node
                return plain(state["_val"])
        if isinstance(state, dict):  # Namespace, dataclass configs
            return {key: plain(item) for key, item in state.items()}
        if value.args:  # enum members and paths are rebuilt from their arguments
            return plain(value.args[0]) if len(value.args) == 1 else [plain(a) for a in value.args]
        return None
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _refusal(path: Path, refused: list[str], expected: str) -> str:
    more = f" (and {len(refused) - 1} more: {', '.join(refused[1:])})" if len(refused) > 1 else ""
    return f"{path}: refused to load global {refused[0]!r}{more} ({expected}); nothing was run"


def first_reason(error: Exception) -> str:
    """The informative line of torch's multi-line ``weights_only`` error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line:
            return line
    return lines[-1] if lines else type(error).__name__
