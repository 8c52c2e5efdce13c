"""Where pre-training starts: an encoder folder (with the heads stored beside it, if any) or a
fairseq checkpoint, whose heads then replace the objective's random ones."""

from __future__ import annotations

import logging
from pathlib import Path

from culturemert.model import EncoderLoadError, open_encoder
from culturemert.model.encoder import Encoder
from culturemert.model.fairseq import is_fairseq_checkpoint, read_fairseq_checkpoint
from culturemert.model.heads import HEADS_FILE, Heads, HeadsFileError, read_heads
from culturemert.pretrain.objective import PretrainingObjective

log = logging.getLogger(__name__)


class HeadsMismatchError(EncoderLoadError):
    """Stored pre-training heads that do not fit the recipe's objective."""


def open_start(init: str | Path) -> tuple[Encoder, Heads | None]:
    """The starting encoder and its stored heads: a fairseq ``.pt``, or a folder (or hub id)."""
    if is_fairseq_checkpoint(init):
        checkpoint = read_fairseq_checkpoint(init)
        return checkpoint.encoder, checkpoint.heads
    encoder = open_encoder(init)
    try:
        heads = read_heads(init) if Path(init).is_dir() else None
    except HeadsFileError as error:
        raise HeadsMismatchError(str(error)) from None
    return encoder, heads


def load_heads(objective: PretrainingObjective, heads: Heads, where: str) -> None:
    """Put stored heads into ``objective`` after checking that they predict what it predicts."""
    config = objective.config
    hint = (
        f"train from the encoder alone with new heads: convert with --no-heads, or remove "
        f"{HEADS_FILE} from the folder"
    )
    if heads.codebook_sizes != list(config.codebook_sizes):
        raise HeadsMismatchError(
            f"{where}: the stored heads predict codebooks of sizes "
            f"{_sizes(heads.codebook_sizes)}, but objective.codebook_sizes (the teacher's) is "
            f"{_sizes(config.codebook_sizes)}; use the teacher the heads were trained on "
            f"(MERT-v1: EnCodec 6 kbps, 8 × 1024) or {hint}"
        )
    if heads.final_dim != config.final_dim:
        raise HeadsMismatchError(
            f"{where}: the stored heads project to {heads.final_dim} dimensions, "
            f"objective.final_dim is {config.final_dim}; set objective.final_dim="
            f"{heads.final_dim} or {hint}"
        )
    tensors = dict(heads.tensors)
    if config.use_cqt:
        if heads.cqt_bins != config.cqt_bins:
            found = f"{heads.cqt_bins} bins" if heads.cqt_bins else "no CQT head"
            raise HeadsMismatchError(
                f"{where}: the stored heads have {found}, objective.cqt_bins is "
                f"{config.cqt_bins}; set objective.cqt_bins (or objective.use_cqt=false) to match"
            )
    else:  # the recipe drops the CQT target: its stored head has nothing to predict
        tensors = {name: t for name, t in tensors.items() if not name.startswith("cqt.")}
    if heads.logit_temp != config.logit_temp:
        log.warning(
            "%s: the stored heads were trained at logit_temp %s, the recipe uses %s",
            where,
            heads.logit_temp,
            config.logit_temp,
        )
    try:
        missing, unexpected = objective.heads.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # a shape that differs (heads of another encoder size)
        raise HeadsMismatchError(f"{where}: the stored heads do not fit: {error}") from None
    if missing or unexpected:
        raise HeadsMismatchError(
            f"{where}: the stored heads do not fit the objective's: missing {missing}, "
            f"unexpected {unexpected}"
        )


def _sizes(sizes: list[int]) -> str:
    """``8 × 1024`` for equal sizes, else the list."""
    sizes = list(sizes)
    if sizes and len(set(sizes)) == 1:
        return f"{len(sizes)} × {sizes[0]}"
    return str(sizes)
