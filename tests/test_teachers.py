"""Teachers: CQT against written-out formulas, k-means against scikit-learn, EnCodec against transformers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nnAudio.features import CQT
from transformers import EncodecConfig, EncodecModel

from culturemert.teachers import (
    CQTTarget,
    EncodecTeacher,
    KMeansTeacher,
    TeacherFileError,
    fit_kmeans_teacher,
    load_teacher,
)
from culturemert.teachers.features import frame_features

SR = 24000


def tone(frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * frequency * t).astype(np.float32)


def frames(samples: int) -> int:
    return (samples - 400) // 320 + 1


@pytest.fixture(scope="module")
def cqt_target():
    return CQTTarget()


def test_cqt_target_equals_nnaudio_cqt_cut_to_encoder_frames(cqt_target):
    waveforms = 0.2 * torch.randn(2, 9000, generator=torch.Generator().manual_seed(0))
    reference = CQT(
        sr=24000,
        hop_length=320,
        fmin=32.7,
        n_bins=336,
        bins_per_octave=48,
        filter_scale=1,
        norm=1,
        window="hann",
        center=True,
        pad_mode="constant",
        output_format="Magnitude",
        verbose=False,
    )(waveforms)
    assert reference.shape[-1] == 9000 // 320 + 1  # centred frames: one more than...
    ours = cqt_target(waveforms)
    assert ours.shape == (2, frames(9000), 336)  # ...the encoder's, which MERT keeps
    expected = reference[..., : frames(9000)].transpose(1, 2)
    assert torch.allclose(ours, expected, atol=1e-5 * float(expected.max()), rtol=1e-4)
    assert cqt_target.state_dict() == {}  # fixed kernels never reach checkpoints


def test_cqt_target_peaks_at_the_tone_bin_with_the_expected_magnitude(cqt_target):
    samples = 24000
    out = cqt_target(torch.from_numpy(tone(440.0))[None])
    assert out.shape == (1, frames(samples), 336)
    # bin k is centred at 32.7·2^(k/48): 440 Hz is bin 48·log2(440/32.7) ≈ 180
    expected_bin = round(48 * math.log2(440.0 / 32.7))
    middle = out[0, out.shape[1] // 2]
    assert int(middle.argmax()) == expected_bin
    # L1-normalised Hann kernel of length l = ceil(Q·sr/f), scaled by sqrt(l): a unit sine
    # correlates to half the kernel's L1 mass, so the peak is 0.5·sqrt(l)
    q = 1 / (2 ** (1 / 48) - 1)
    length = math.ceil(q * SR / (32.7 * 2 ** (expected_bin / 48)))
    assert float(middle.max()) == pytest.approx(0.5 * math.sqrt(length), rel=0.03)


@pytest.mark.parametrize("samples", [400, 719, 720, 12345, 24000])
def test_frame_features_follow_the_encoder_frame_count(samples):
    waveform = np.random.default_rng(0).standard_normal(samples).astype(np.float32)
    assert frame_features(waveform, "mfcc+chroma").shape == (frames(samples), 60 + 12)
    assert frame_features(waveform, "logmel").shape == (frames(samples), 64)


def test_features_are_aligned_with_the_receptive_field_of_each_frame():
    waveform = np.zeros(24000, dtype=np.float32)
    burst_frame = 30  # a burst filling exactly frame 30's 400 samples
    waveform[320 * burst_frame : 320 * burst_frame + 400] = tone(3000.0, 400 / SR)
    energy = frame_features(waveform, "logmel").max(axis=1)
    assert int(energy.argmax()) == burst_frame
    quiet = np.ones(len(energy), dtype=bool)
    quiet[burst_frame - 1 : burst_frame + 2] = False  # only the overlapping frames hear it
    assert energy[quiet].max() < energy.min() + 1e-3


def test_chroma_folds_pitch_classes_from_c():
    chroma = frame_features(tone(440.0), "chroma")  # A4: pitch class 9
    assert (chroma.argmax(axis=1)[5:-5] == 9).all()
    assert chroma.max() == pytest.approx(1.0)


def two_sound_corpus(seed: int = 0) -> list[np.ndarray]:
    """Tracks alternating 0.5 s of a low tone and 0.5 s of white noise."""
    rng = np.random.default_rng(seed)
    tracks = []
    for _ in range(3):
        noise = 0.3 * rng.standard_normal(SR // 2).astype(np.float32)
        tracks.append(np.concatenate([tone(110.0, 0.5), noise, tone(110.0, 0.5), noise]))
    return tracks


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    teacher = fit_kmeans_teacher(two_sound_corpus(), ["mfcc:2", "chroma:3"], progress=False)
    path = teacher.save(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")
    return teacher, path


def test_kmeans_codes_are_nearest_standardised_centroids(fitted):
    teacher, _ = fitted
    waveform = two_sound_corpus(seed=1)[0]
    codes = teacher(waveform)
    assert codes.dtype == np.int64 and codes.shape == (2, frames(len(waveform)))
    assert teacher.codebook_sizes == [2, 3]
    for k, (book, kind) in enumerate(zip(teacher.codebooks, ["mfcc", "chroma"], strict=True)):
        z = (frame_features(waveform, kind) - book.mean) / book.scale
        distances = ((z[:, None, :] - book.centroids[None]) ** 2).sum(-1)
        assert (codes[k] == distances.argmin(1)).all()
    # two clusters of MFCC frames separate tone from noise (frames well inside each half)
    half = frames(SR // 2)
    tone_codes, noise_codes = codes[0, 3 : half - 3], codes[0, half + 3 : 2 * half - 3]
    assert len(set(tone_codes)) == 1 and len(set(noise_codes)) == 1
    assert tone_codes[0] != noise_codes[0]


def test_kmeans_file_round_trips_without_pickle(fitted):
    teacher, path = fitted
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle stream
    loaded = load_teacher(str(path))
    assert isinstance(loaded, KMeansTeacher)
    assert loaded.hash == teacher.hash and loaded.name == teacher.name
    waveform = two_sound_corpus(seed=2)[1]
    assert (loaded(waveform) == teacher(waveform)).all()
    assert load_teacher(f"kmeans:{path}").hash == teacher.hash


def test_kmeans_hash_tracks_parameters_and_contents(fitted, tmp_path):
    teacher, path = fitted
    short = [two_sound_corpus()[0][: SR // 2]]
    first = fit_kmeans_teacher(short, ["mfcc:2"], progress=False)
    assert fit_kmeans_teacher(short, ["mfcc:2"], progress=False).hash == first.hash  # deterministic
    assert fit_kmeans_teacher(short, ["mfcc:3"], progress=False).hash != first.hash
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    tensors["codebook.0.centroids"] = tensors["codebook.0.centroids"] + 1
    save_file(tensors, tmp_path / "tampered.safetensors", metadata=metadata)
    with pytest.raises(TeacherFileError, match="hash"):
        KMeansTeacher.load(tmp_path / "tampered.safetensors")


def test_bad_teacher_specs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown features"):
        fit_kmeans_teacher([], ["spectrum:10"])
    with pytest.raises(ValueError, match="K ≥ 2"):
        fit_kmeans_teacher([], ["mfcc"])
    with pytest.raises(ValueError, match="expected a k-means teacher file"):
        load_teacher(str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a teacher")
    with pytest.raises(TeacherFileError, match="junk"):
        load_teacher(str(tmp_path / "junk.safetensors"))


@pytest.fixture(scope="module")
def tiny_encodec_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = EncodecConfig(
        sampling_rate=24000,
        audio_channels=1,
        target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0],
        upsampling_ratios=[8, 5, 4, 2],
        hidden_size=16,
        num_filters=4,
        num_lstm_layers=1,
        codebook_size=1024,
        codebook_dim=16,
        use_causal_conv=True,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
    )
    model = EncodecModel(config)
    directory = tmp_path_factory.mktemp("encodec")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def encodec_teacher(tiny_encodec_dir):
    return load_teacher(f"encodec:{tiny_encodec_dir}")


def test_encodec_codes_match_transformers_and_encoder_frames(tiny_encodec_dir, encodec_teacher):
    teacher = encodec_teacher
    assert isinstance(teacher, EncodecTeacher)
    assert teacher.codebook_sizes == [1024] * 8  # 6 kbps at 75 Hz: 8 × 10 bit
    waveform = 0.3 * np.random.default_rng(0).standard_normal(24000 + 123).astype(np.float32)
    codes = teacher(waveform)
    assert codes.dtype == np.int64 and codes.shape == (8, frames(len(waveform)))
    assert codes.min() >= 0 and codes.max() < 1024
    reference = EncodecModel.from_pretrained(tiny_encodec_dir).eval()
    with torch.no_grad():
        direct = reference.encode(torch.from_numpy(waveform)[None, None], bandwidth=6.0).audio_codes
    assert direct.shape[-1] == math.ceil(len(waveform) / 320)  # one code per 320 samples
    assert (codes == direct[0, 0, :, : codes.shape[1]].numpy()).all()  # label t ↔ frame t


def test_encodec_hash_depends_on_weights_and_bandwidth(tiny_encodec_dir, encodec_teacher, tmp_path):
    base = encodec_teacher
    assert EncodecTeacher(tiny_encodec_dir).hash == base.hash
    wider = EncodecTeacher(tiny_encodec_dir, bandwidth=12.0)
    assert wider.codebook_sizes == [1024] * 16 and wider.hash != base.hash
    model = EncodecModel.from_pretrained(tiny_encodec_dir)
    with torch.no_grad():
        model.quantizer.layers[0].codebook.embed.add_(1.0)
    model.save_pretrained(tmp_path / "changed")
    assert EncodecTeacher(tmp_path / "changed").hash != base.hash
    with pytest.raises(FileNotFoundError, match="no config.json"):
        EncodecTeacher(tmp_path / "nowhere")
