"""Which parameters a stage trains: named groups of the objective's modules, or name globs."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

#: Group → parameter-name prefixes inside ``PretrainingObjective`` (``encoder`` is the HubertModel).
GROUP_PREFIXES = {
    "cnn": ("encoder.feature_extractor.",),
    "projection": ("encoder.feature_projection.",),
    # The mask embedding is part of released MERT checkpoints and feeds the transformer.
    "encoder": ("encoder.encoder.", "encoder.masked_spec_embed"),
    "all": ("",),
}


def _in_group(name: str, group: str) -> bool:
    if group == "heads":  # everything the objective adds around the encoder
        return not name.startswith("encoder.")
    return name.startswith(GROUP_PREFIXES[group])


def trainable_names(module: nn.Module, selection: Sequence[str], where: str) -> set[str]:
    """Names of the parameters chosen by groups (heads, cnn, projection, encoder, all) or globs."""
    names = [name for name, _ in module.named_parameters()]
    chosen: set[str] = set()
    for entry in selection:
        if entry == "heads" or entry in GROUP_PREFIXES:
            matched = {n for n in names if _in_group(n, entry)}
        else:
            matched = set(fnmatch.filter(names, entry))
        if not matched:
            raise ValueError(
                f"{where}: {entry!r} matches no parameter (groups: heads, "
                f"{', '.join(GROUP_PREFIXES)}; or a glob such as 'encoder.encoder.layers.11.*')"
            )
        chosen |= matched
    return chosen


def set_trainable(module: nn.Module, selection: Sequence[str], where: str) -> list[nn.Parameter]:
    """Freeze every parameter but the selected ones; return the trainable parameters."""
    chosen = trainable_names(module, selection, where)
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(name in chosen)
    # HF's feature encoder marks its input as requiring grad unless told it is frozen, which
    # would run backward through the whole network when only the heads train.
    feature_extractor = module.encoder.feature_extractor
    feature_extractor._requires_grad = any(p.requires_grad for p in feature_extractor.parameters())
    return [p for p in module.parameters() if p.requires_grad]
