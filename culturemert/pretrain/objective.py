"""MERT's pre-training objective around a ``transformers.HubertModel``.

Per masked frame, as fairseq's HuBERT criterion with MERT's weights:
``Σ_k CE_k(cos(P_k·x, e)/τ) + cqt_weight·MSE(CQT) + feature_penalty_weight·mean(cnn²)``.
The encoder's forward pass is replayed step by step (CNN, projection, masking, transformer) so
the raw CNN output feeds the feature penalty without running the front end twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import HubertModel

from culturemert.pretrain.masking import compute_mask_indices
from culturemert.pretrain.noise import mix_in_batch_noise
from culturemert.teachers.cqt import CQTTarget


@dataclass
class ObjectiveConfig:
    """Sizes and weights of the objective; defaults are MERT-v1-95M's."""

    codebook_sizes: list[int]  # e.g. [1024] * 8 for EnCodec, [k] for one k-means codebook
    final_dim: int = 64
    logit_temp: float = 0.1
    mask_prob: float = 0.8
    mask_length: int = 5
    use_cqt: bool = True
    cqt_bins: int = 336
    acoustic_weight: float = 1.0
    cqt_weight: float = 1.0
    feature_penalty_weight: float = 10.0
    feature_grad_mult: float = 0.1
    noise_prob: float = 0.5


@dataclass
class ObjectiveOutput:
    """The loss to back-propagate and what to log about it."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached, unweighted
    accuracy: Tensor | None = None  # masked prediction accuracy per codebook, [K]
    masked_frames: int = 0
    mask: Tensor | None = None  # [B, T] bool: the frames replaced by the mask embedding


class GradMultiply(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, tensor: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return tensor.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def cosine_logits(projected: Tensor, embeddings: Tensor, temperature: float) -> Tensor:
    """``[N, D] × [C, D] → [N, C]`` cosine similarities divided by ``temperature``, in float32."""
    projected = F.normalize(projected.float(), dim=-1, eps=1e-8)
    embeddings = F.normalize(embeddings.float(), dim=-1, eps=1e-8)
    return projected @ embeddings.T / temperature


class PretrainingHeads(nn.Module):
    """Acoustic heads (one projection and one label-embedding table per codebook) and the CQT head."""

    def __init__(self, hidden_size: int, config: ObjectiveConfig):
        super().__init__()
        self.codebook_sizes = list(config.codebook_sizes)
        # One Linear chunked per codebook, as fairseq's untied ``final_proj``.
        self.projection = nn.Linear(hidden_size, config.final_dim * len(self.codebook_sizes))
        self.label_embeddings = nn.Parameter(
            torch.empty(sum(self.codebook_sizes), config.final_dim).uniform_()
        )
        self.cqt = nn.Linear(hidden_size, config.cqt_bins) if config.use_cqt else None

    def codebook_logits(self, hidden: Tensor, temperature: float) -> list[Tensor]:
        """Per codebook ``[N, classes_k]`` cosine logits for ``[N, hidden]`` frames."""
        projected = self.projection(hidden).chunk(len(self.codebook_sizes), dim=-1)
        tables = self.label_embeddings.split(self.codebook_sizes, dim=0)
        return [cosine_logits(p, e, temperature) for p, e in zip(projected, tables, strict=True)]


class PretrainingObjective(nn.Module):
    """MERT's masked-prediction objective on a HubertModel: ``forward(waveforms, codes)``."""

    def __init__(self, encoder: HubertModel, config: ObjectiveConfig):
        super().__init__()
        if not config.codebook_sizes or min(config.codebook_sizes) < 1:
            raise ValueError(
                f"codebook_sizes must list positive sizes, got {config.codebook_sizes}"
            )
        if getattr(encoder, "masked_spec_embed", None) is None:
            raise ValueError(
                "encoder has no masked_spec_embed (its config sets mask_time_prob = 0); "
                "load it with culturemert.model.load_encoder, which keeps the mask embedding"
            )
        self.config = config
        self.encoder = encoder
        self.heads = PretrainingHeads(encoder.config.hidden_size, config)
        # The CQT kernels (~40 MB at 336 bins) are fixed: kept out of the module tree so they
        # never reach state_dict, DDP buffer broadcasts or half-precision casts.
        object.__setattr__(self, "cqt", CQTTarget(config.cqt_bins) if config.use_cqt else None)

    def cnn_features(self, waveforms: Tensor) -> Tensor:
        """Raw CNN output ``[B, C, T]`` with its gradient scaled by ``feature_grad_mult``."""
        scale = self.config.feature_grad_mult
        if scale <= 0:  # frozen front end: no graph at all, as fairseq
            with torch.no_grad():
                return self.encoder.feature_extractor(waveforms)
        features = self.encoder.feature_extractor(waveforms)
        return GradMultiply.apply(features, scale) if scale != 1.0 else features

    def draw_mask(self, batch: int, frames: int, generator: torch.Generator | None) -> Tensor:
        """Span mask ``[B, T]`` (bool), seeded from ``generator`` (or torch's global RNG)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        mask = compute_mask_indices(
            (batch, frames),
            None,
            mask_prob=self.config.mask_prob,
            mask_length=self.config.mask_length,
            min_masks=2,
            rng=np.random.default_rng(seed),
        )
        return torch.from_numpy(mask)

    def frame_count(self, num_samples: int) -> int:
        """Encoder frames for ``num_samples`` of audio (the CNN's kernels and strides applied)."""
        frames = num_samples
        for kernel, stride in zip(
            self.encoder.config.conv_kernel, self.encoder.config.conv_stride, strict=True
        ):
            frames = (frames - kernel) // stride + 1
        return max(frames, 0)

    def forward(
        self,
        waveforms: Tensor,
        codes: Tensor,
        *,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> ObjectiveOutput:
        """Loss on a batch of clean ``[B, L]`` clips and their ``[B, K, T_labels]`` codes (−1: none).

        ``mask`` (``[B, T]`` bool) names the frames to mask; when omitted it is drawn from
        ``generator``, which also drives the noise mixing.
        """
        config = self.config
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be [batch, samples], got {tuple(waveforms.shape)}")
        self._check_codes(codes, waveforms.shape[0])
        clean = waveforms
        if self.training and config.noise_prob > 0:
            waveforms = mix_in_batch_noise(clean, prob=config.noise_prob, generator=generator)

        features = self.cnn_features(waveforms)
        feature_penalty = features.float().pow(2).mean()
        batch, frames = features.shape[0], features.shape[2]
        hidden = self.encoder.feature_projection(features.transpose(1, 2))
        if mask is None:
            mask = self.draw_mask(batch, frames, generator)
        elif tuple(mask.shape) != (batch, frames):
            raise ValueError(f"mask must be [{batch}, {frames}], got {tuple(mask.shape)}")
        mask = mask.to(hidden.device)
        hidden = torch.where(
            mask[..., None], self.encoder.masked_spec_embed.to(hidden.dtype), hidden
        )
        hidden = self.encoder.encoder(hidden).last_hidden_state  # [B, T, hidden]

        labels = _align_labels(codes, frames).to(hidden.device)  # [B, K, T]
        masked_hidden = hidden[mask]  # [M, hidden], frames in (row, time) order
        masked_labels = labels.permute(0, 2, 1)[mask]  # [M, K]
        ce_terms, accuracy = [], []
        for k, logits in enumerate(self.heads.codebook_logits(masked_hidden, config.logit_temp)):
            target = masked_labels[:, k]
            valid = target >= 0  # frames without a label (padding) never count
            count = valid.sum().clamp(min=1)
            ce_terms.append(F.cross_entropy(logits[valid], target[valid], reduction="sum") / count)
            accuracy.append((logits[valid].argmax(-1) == target[valid]).sum() / count)
        acoustic = torch.stack(ce_terms).sum()
        loss = config.acoustic_weight * acoustic + config.feature_penalty_weight * feature_penalty
        terms = {"acoustic": acoustic.detach(), "feature_penalty": feature_penalty.detach()}
        if self.cqt is not None:
            target = self.cqt.to(clean.device)(clean)[mask]  # [M, bins], from the clean clips
            predicted = self.heads.cqt(masked_hidden).float()
            cqt_loss = F.mse_loss(predicted, target)
            loss = loss + config.cqt_weight * cqt_loss
            terms["cqt"] = cqt_loss.detach()
        return ObjectiveOutput(
            loss=loss,
            terms=terms,
            accuracy=torch.stack(accuracy).detach(),
            masked_frames=int(mask.sum()),
            mask=mask,
        )

    def _check_codes(self, codes: Tensor, batch: int) -> None:
        sizes = self.config.codebook_sizes
        if codes.dim() != 3 or codes.shape[0] != batch or codes.shape[1] != len(sizes):
            raise ValueError(
                f"codes must be [batch={batch}, codebooks={len(sizes)}, frames], "
                f"got {tuple(codes.shape)}"
            )
        limits = torch.tensor(sizes, device=codes.device)[None, :, None]
        if (codes >= limits).any() or (codes < -1).any():
            raise ValueError(f"codes out of range for codebook sizes {sizes} (−1 marks no label)")


def _align_labels(codes: Tensor, frames: int) -> Tensor:
    """Label t pairs with frame t: crop to ``frames``, or pad missing frames with −1."""
    codes = codes.long()[..., :frames]
    missing = frames - codes.shape[-1]
    return F.pad(codes, (0, missing), value=-1) if missing > 0 else codes
