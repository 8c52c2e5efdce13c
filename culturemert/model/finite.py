"""The one check every weight writer runs: no tensor may hold NaN or infinity."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

log = logging.getLogger(__name__)


class NonFiniteWeightsError(ValueError):
    """A tensor holds NaN or infinity; the message names the tensor and where it came from."""


def non_finite_count(tensor: torch.Tensor) -> str | None:
    """``"3 NaN and 1 infinity"`` for a tensor holding such values, else None."""
    if not tensor.is_floating_point() and not tensor.is_complex():
        return None
    if bool(torch.isfinite(tensor).all()):  # the common case: one pass, no counting
        return None
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    parts = []
    if nan:
        parts.append(f"{nan} NaN")
    if inf:
        parts.append(f"{inf} infinite value{'s' if inf > 1 else ''}")
    return " and ".join(parts)


def check_finite(
    name: str, tensor: torch.Tensor, where: str, *, allow: bool = False, hint: str = ""
) -> torch.Tensor:
    """Return ``tensor`` if finite; else raise (or, with ``allow``, log a warning) naming it.

    ``where`` names the input (``models[1] runs/a/model.safetensors``); ``hint`` says how to
    write such weights anyway (the flag of the caller).
    """
    count = non_finite_count(tensor)
    if count is None:
        return tensor
    message = f"{where}: tensor {name!r} holds {count}"
    if allow:
        log.warning("%s (writing it anyway, as asked)", message)
        return tensor
    raise NonFiniteWeightsError(f"{message}; refusing to write non-finite weights{hint}")


def check_state_finite(
    tensors: Iterable[tuple[str, torch.Tensor]], where: str, *, allow: bool = False, hint: str = ""
) -> None:
    """:func:`check_finite` on every named tensor (a state dict's ``items()``)."""
    for name, tensor in tensors:
        check_finite(name, tensor, where, allow=allow, hint=hint)
