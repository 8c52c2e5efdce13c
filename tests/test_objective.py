"""The pre-training objective against direct written-out computations on a tiny encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nnAudio.features import CQT

from culturemert.model import load_encoder
from culturemert.pretrain.objective import ObjectiveConfig, PretrainingObjective, cosine_logits

SIZES = [16, 8]
BINS = 84  # 12 bins per octave: short kernels keep the test fast; 336 is checked in test_teachers


@pytest.fixture()
def objective(tiny_encoder_dir):
    torch.manual_seed(0)
    config = ObjectiveConfig(codebook_sizes=SIZES, final_dim=8, cqt_bins=BINS)
    return PretrainingObjective(load_encoder(tiny_encoder_dir), config).eval()


def batch(clips: int = 2, samples: int = 12000, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    waveforms = 0.1 * torch.randn(clips, samples, generator=generator)
    frames = (samples - 400) // 320 + 1
    codes = torch.stack(
        [torch.randint(0, k, (clips, frames + 1), generator=generator) for k in SIZES], 1
    )
    return waveforms, codes


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cosine_logits_are_cosine_over_temperature():
    x, e = torch.randn(5, 4), torch.randn(7, 4)
    expected = torch.tensor([[float(a @ b / (a.norm() * b.norm())) / 0.1 for b in e] for a in x])
    assert torch.allclose(cosine_logits(x, e, 0.1), expected, atol=1e-5)


def reference_terms(encoder, projection, tables, cqt_head, waveforms, codes, mask, bins=BINS):
    """The loss terms written out: transformers' own forward with ``mask``, cosine / 0.1
    cross-entropy per codebook (frames labelled −1 left out), nnAudio's CQT at 12 bins per
    octave, and the mean square of the CNN output."""
    with torch.no_grad():
        # transformers' own forward with the same mask gives the hidden states
        hidden = encoder(waveforms, mask_time_indices=mask).last_hidden_state[mask]
        penalty = float(encoder.feature_extractor(waveforms).pow(2).mean())
        acoustic = 0.0
        projected = projection(hidden).chunk(len(tables), dim=-1)
        for k, table in enumerate(tables):
            p = projected[k] / projected[k].norm(dim=-1, keepdim=True)
            e = table / table.norm(dim=-1, keepdim=True)
            logits = p @ e.T / 0.1
            target = codes[:, k, : mask.shape[1]][mask]
            logits, target = logits[target >= 0], target[target >= 0]
            picked = logits.gather(1, target[:, None])[:, 0]
            acoustic += float((logits.exp().sum(-1).log() - picked).mean())
        terms = {"acoustic": acoustic, "feature_penalty": penalty}
        if cqt_head is not None:
            cqt = CQT(
                sr=24000,
                hop_length=320,
                fmin=32.7,
                n_bins=bins,
                bins_per_octave=12,
                pad_mode="constant",
                verbose=False,
            )(waveforms).transpose(1, 2)
            terms["cqt"] = float(((cqt_head(hidden) - cqt[:, : mask.shape[1]][mask]) ** 2).mean())
    return terms


def test_loss_equals_a_hand_computed_value(objective):
    waveforms, codes = batch()
    out = objective(waveforms, codes, generator=seeded())
    mask, encoder, heads = out.mask, objective.encoder, objective.heads
    tables = heads.label_embeddings.split(SIZES)
    terms = reference_terms(encoder, heads.projection, tables, heads.cqt, waveforms, codes, mask)
    acoustic, cqt_mse, penalty = terms["acoustic"], terms["cqt"], terms["feature_penalty"]
    assert out.masked_frames == int(mask.sum()) > 0
    assert out.terms["acoustic"].item() == pytest.approx(acoustic, rel=1e-5)
    assert out.terms["cqt"].item() == pytest.approx(cqt_mse, rel=1e-5)
    assert out.terms["feature_penalty"].item() == pytest.approx(float(penalty), rel=1e-5)
    assert out.loss.item() == pytest.approx(acoustic + cqt_mse + 10 * float(penalty), rel=1e-5)


def test_labels_at_unmasked_or_unlabelled_frames_change_nothing(objective):
    waveforms, codes = batch()
    out = objective(waveforms, codes, generator=seeded(3))
    frames = out.mask.shape[1]
    changed = codes.clone()
    unmasked = ~out.mask[:, None, :].expand(-1, 2, -1)
    changed[..., :frames][unmasked] = (changed[..., :frames][unmasked] + 1) % 8
    changed[..., frames:] = 0  # the extra label past the last frame is dropped
    again = objective(waveforms, changed, generator=seeded(3))
    assert torch.equal(again.mask, out.mask)
    assert again.loss.item() == out.loss.item()
    # a masked frame's label does count; −1 removes a frame from the cross-entropy
    row, t = out.mask.nonzero()[0].tolist()
    flipped = codes.clone()
    flipped[row, 0, t] = (codes[row, 0, t] + 1) % SIZES[0]
    assert objective(waveforms, flipped, generator=seeded(3)).loss.item() != out.loss.item()
    unlabelled = codes.clone()
    unlabelled[:, 1] = -1
    assert objective(waveforms, unlabelled, generator=seeded(3)).terms["acoustic"].item() == (
        pytest.approx(
            out.terms["acoustic"].item() - ce_of_codebook(objective, waveforms, codes, 1, 3)
        )
    )


def ce_of_codebook(objective, waveforms, codes, k, seed):
    """The objective's acoustic term restricted to codebook k (the others marked −1)."""
    only = torch.full_like(codes, -1)
    only[:, k] = codes[:, k]
    return objective(waveforms, only, generator=seeded(seed)).terms["acoustic"].item()


def test_gradient_reaches_heads_and_mask_embedding(objective):
    waveforms, codes = batch()
    objective(waveforms, codes, generator=seeded()).loss.backward()
    heads = objective.heads
    for parameter in (heads.projection.weight, heads.label_embeddings, heads.cqt.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert objective.encoder.masked_spec_embed.grad.abs().sum() > 0


def test_feature_grad_mult_scales_the_cnn_gradient(objective):
    waveforms, codes = batch()
    conv = objective.encoder.feature_extractor.conv_layers[0].conv.weight
    grads = {}
    for mult in (1.0, 0.1):
        objective.config.feature_grad_mult = mult
        objective.zero_grad()
        objective(waveforms, codes, generator=seeded()).loss.backward()
        grads[mult] = conv.grad.clone()
    scale = grads[1.0].abs().max()
    assert (grads[0.1] - 0.1 * grads[1.0]).abs().max() < 1e-5 * scale  # float rounding only
    objective.config.feature_grad_mult = 0.0  # frozen front end: no gradient at all
    objective.zero_grad()
    objective(waveforms, codes, generator=seeded()).loss.backward()
    assert conv.grad is None or not conv.grad.any()


def test_training_mode_mixes_noise_but_the_cqt_target_stays_clean(objective, monkeypatch):
    waveforms, codes = batch()
    noise = 0.5 * torch.randn(waveforms.shape, generator=seeded(9))
    seen = []

    def fake_mix(clean, *, prob, generator):
        seen.append(prob)
        return clean + noise

    monkeypatch.setattr("culturemert.pretrain.objective.mix_in_batch_noise", fake_mix)
    objective.train()
    objective.encoder.eval()  # dropout off so the reference forward is deterministic
    out = objective(waveforms, codes, generator=seeded(4))
    assert seen == [0.5]
    with torch.no_grad():
        hidden = objective.encoder(waveforms + noise, mask_time_indices=out.mask).last_hidden_state
        clean_cqt = objective.cqt(waveforms)
        expected = F.mse_loss(objective.heads.cqt(hidden[out.mask]), clean_cqt[out.mask])
    assert out.terms["cqt"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_codes_are_refused(objective):
    waveforms, codes = batch()
    with pytest.raises(ValueError, match="codebooks=2"):
        objective(waveforms, codes[:, :1])
    codes[0, 1, 0] = SIZES[1]
    with pytest.raises(ValueError, match="out of range"):
        objective(waveforms, codes)


def test_frame_count_and_a_given_mask(objective):
    encoder = objective.encoder
    for samples in (400, 401, 719, 720, 12000, 120000):
        expected = int(encoder._get_feat_extract_output_lengths(torch.tensor(samples)))
        assert objective.frame_count(samples) == expected
    waveforms = torch.randn(2, 4000)
    frames = objective.frame_count(4000)
    codes = torch.zeros(2, 2, frames, dtype=torch.long)
    mask = torch.zeros(2, frames, dtype=torch.bool)
    mask[0, 3:8] = mask[1, 0:5] = True
    output = objective(waveforms, codes, mask=mask)
    assert torch.equal(output.mask, mask) and output.masked_frames == 10
    with pytest.raises(ValueError, match=rf"mask must be \[2, {frames}\]"):
        objective(waveforms, codes, mask=mask[:, 1:])
