"""Training data: mixture shares, rank shares, crops and label slices, unreadable audio, targets."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from pretrain_corpus import ToneTeacher, corpus_recipe, stage, write_corpus, write_targets

from culturemert.manifest import Track
from culturemert.pretrain.data import (
    CropDataset,
    DataError,
    RankBatchSampler,
    crop_loader,
    label_slice,
    mixture_sources,
    read_corpus,
    read_crop,
)
from culturemert.pretrain.loop import plan_stages, train
from culturemert.pretrain.recipe import MixtureConfig, recipe_from_dict
from culturemert.teachers.targets import TargetsError, load_targets


def tracks(tradition: str, durations: list[float]) -> list[Track]:
    return [
        Track(f"{tradition}-{i}", f"/audio/{tradition}-{i}.wav", tradition=tradition, duration=d)
        for i, d in enumerate(durations)
    ]


def draw_shares(sources, draws: int = 6000) -> tuple[Counter, Counter]:
    dataset = CropDataset(sources, None, crop_samples=24000, seed=3, stage_index=0)
    plans = [dataset.plan(i) for i in range(draws)]
    return Counter(s.name for s, _, _ in plans), Counter(t.track_id for _, t, _ in plans)


def test_hours_weighting_with_replay_matches_the_expected_shares():
    corpus = tracks("lyra", [2, 3, 5, 0.5]) + tracks(
        "makam", [10, 20]
    )  # 0.5 s: shorter than a crop
    western = tracks("western", [4, 4])
    sources = mixture_sources(
        MixtureConfig(traditions=["lyra", "makam"], replay=0.2), corpus, western, 1.0
    )
    by_source, by_track = draw_shares(sources)
    # hours: lyra 10 s, makam 30 s share the 80% left by replay.
    expected = {"lyra": 0.8 * 10 / 40, "makam": 0.8 * 30 / 40, "replay": 0.2}
    for name, share in expected.items():
        assert by_source[name] / 6000 == pytest.approx(share, abs=0.02)
    assert by_track["lyra-3"] == 0  # too short for a crop: never drawn
    # within a source, tracks come in proportion to their duration (20 s vs 10 s)
    assert by_track["makam-1"] / by_track["makam-0"] == pytest.approx(2.0, rel=0.12)


def test_explicit_ratios_override_hours():
    corpus = tracks("lyra", [2, 3]) + tracks("makam", [100])
    sources = mixture_sources(MixtureConfig(traditions={"lyra": 3, "makam": 1}), corpus, [], 1.0)
    by_source, _ = draw_shares(sources)
    assert by_source["lyra"] / 6000 == pytest.approx(0.75, abs=0.02)
    assert by_source["makam"] / 6000 == pytest.approx(0.25, abs=0.02)


def test_unknown_tradition_names_the_field_and_the_known_ones():
    with pytest.raises(DataError, match=r"stages\.0\.mixture\.traditions: .*'hindustani'.*lyra"):
        mixture_sources(
            MixtureConfig(traditions=["hindustani"]),
            tracks("lyra", [5]),
            [],
            1.0,
            where="stages.0.mixture",
        )


def test_ranks_take_disjoint_shares_and_resume_mid_sequence():
    world, batch, micro_batches = 3, 2, 5
    shares = [
        [i for b in RankBatchSampler(batch, 0, micro_batches, rank, world) for i in b]
        for rank in range(world)
    ]
    everything = sorted(i for share in shares for i in share)
    assert everything == list(range(world * batch * micro_batches))  # disjoint and complete
    resumed = [b for b in RankBatchSampler(batch, 2, micro_batches, 1, world)]
    assert resumed == list(RankBatchSampler(batch, 0, micro_batches, 1, world))[2:]


def test_crop_is_the_slice_of_the_whole_track_and_labels_follow_merts_formula(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.5, 0.5, 24000 * 3).astype(np.float32)
    path = tmp_path / "ramp.wav"
    sf.write(path, audio, 24000, subtype="FLOAT")
    crop, start = read_crop(str(path), 0.37, 24000)
    assert start == int(0.37 * (len(audio) - 24000 + 1))
    np.testing.assert_array_equal(crop, sf.read(path, dtype="float32")[0][start : start + 24000])

    codes = np.arange(2 * 225).reshape(2, 225)
    first, count = round(start * 75 / 24000), round(24000 * 75 / 24000)
    np.testing.assert_array_equal(label_slice(codes, start, 24000), codes[:, first : first + count])
    tail = label_slice(codes, 24000 * 3 - 12000, 24000)  # half a crop past the end
    assert tail.shape == (2, 75)
    np.testing.assert_array_equal(tail[:, :37], codes[:, 188:225])
    assert (tail[:, 37:] == -1).all()


def test_resampled_files_give_the_crop_of_the_resampled_track(tmp_path):
    from culturemert.audio import load_audio

    rng = np.random.default_rng(1)
    path = tmp_path / "stereo48k.wav"
    sf.write(path, rng.uniform(-0.3, 0.3, (48000 * 2, 2)).astype(np.float32), 48000)
    crop, start = read_crop(str(path), 0.5, 12000)
    np.testing.assert_array_equal(crop, load_audio(path, 24000)[start : start + 12000])


def test_loader_batches_are_the_same_with_decoding_in_workers(tmp_path):
    manifest, _ = write_corpus(tmp_path, {"lyra": [2.0, 3.0], "makam": [4.0]})
    targets = load_targets(write_targets(tmp_path, [manifest]), ToneTeacher.hash)
    sources = mixture_sources(
        MixtureConfig(traditions=["lyra", "makam"]), read_corpus([manifest]), [], 1.0
    )
    dataset = CropDataset(sources, targets, 24000, seed=0, stage_index=0)
    in_process = list(crop_loader(dataset, 2, 0, 3))
    in_workers = list(crop_loader(dataset, 2, 0, 3, num_workers=1))
    for a, b in zip(in_process, in_workers, strict=True):
        assert a["waveforms"].shape == (2, 24000) and a["codes"].shape == (2, 2, 75)
        assert torch.equal(a["waveforms"], b["waveforms"]) and torch.equal(a["codes"], b["codes"])
    # The labels are the teacher's codes of the whole track at the crop's frames.
    first = in_process[0]
    source, track, fraction = dataset.plan(0)
    waveform = sf.read(track.path, dtype="float32")[0]
    start = int(fraction * (len(waveform) - 24000 + 1))
    assert torch.equal(first["waveforms"][0], torch.from_numpy(waveform[start : start + 24000]))
    whole = ToneTeacher()(waveform)
    assert torch.equal(first["codes"][0], torch.from_numpy(whole[:, round(start / 320) :][:, :75]))


def test_corrupt_audio_is_skipped_logged_and_reported(tmp_path, caplog):
    manifest, corpus = write_corpus(tmp_path, {"lyra": [2.0, 30.0]})
    targets = load_targets(write_targets(tmp_path, [manifest]), ToneTeacher.hash)
    broken = tmp_path / corpus[1].path  # the long track: drawn most of the time
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 10)
    sources = mixture_sources(MixtureConfig(traditions=["lyra"]), read_corpus([manifest]), [], 1.0)
    dataset = CropDataset(sources, targets, 24000, seed=0, stage_index=0)
    with caplog.at_level(logging.WARNING, logger="culturemert.pretrain.data"):
        batches = list(crop_loader(dataset, 4, 0, 3))
    unreadable = {path for batch in batches for path in batch["unreadable"]}
    assert unreadable == {str(broken)}
    assert all(batch["waveforms"].shape == (4, 24000) for batch in batches)
    assert any(str(broken) in record.getMessage() for record in caplog.records)


def test_teacher_mismatch_stops_the_run_before_training(tmp_path, tiny_encoder_dir):
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=[stage("heads", ["heads"], 2)])
    raw["teacher"]["hash"] = "0" * 64
    with pytest.raises(TargetsError, match="recompute the targets"):
        train(recipe_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was trained or written


def test_missing_target_file_stops_the_run_before_training(tmp_path, tiny_encoder_dir):
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=[stage("heads", ["heads"], 2)])
    extra, _ = write_corpus(tmp_path, {"makam": [3.0]}, name="late")  # no targets computed
    raw["data"]["manifests"].append(str(extra))
    with pytest.raises(DataError, match=r"1 of 5 tracks have no targets \(late-makam-0\)"):
        train(recipe_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_codebook_sizes_must_match_the_teacher(tmp_path, tiny_encoder_dir):
    raw = corpus_recipe(tmp_path, tiny_encoder_dir, stages=[stage("heads", ["heads"], 2)])
    raw["objective"]["codebook_sizes"] = [8]
    with pytest.raises(DataError, match="objective.codebook_sizes"):
        plan_stages(recipe_from_dict(raw), world_size=1)


def test_batch_must_split_over_devices_and_accumulation(tmp_path, tiny_encoder_dir):
    raw = corpus_recipe(
        tmp_path, tiny_encoder_dir, stages=[stage("heads", ["heads"], 2, accumulate=3)]
    )
    with pytest.raises(DataError, match=r"stages\.0\.batch_seconds"):
        plan_stages(recipe_from_dict(raw), world_size=1)


def test_cli_check_prints_each_stage_and_bad_overrides_fail_cleanly(
    tmp_path, tiny_encoder_dir, capsys
):
    from culturemert.cli import main

    raw = corpus_recipe(
        tmp_path, tiny_encoder_dir, stages=[stage("heads", ["heads"], 2)], replay=True
    )
    raw["stages"][0]["mixture"]["replay"] = 0.2
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(recipe), "--check", "--set", "stages.heads.steps=9"]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[:3] == ["heads", "heads", "9"]
    assert "replay 20%" in " ".join(line)
    assert main(["pretrain", str(recipe), "--set", "stages.0.crop_seconds=-1"]) == 1
    assert "stages.0.crop_seconds" in capsys.readouterr().err


def test_files_only_ffmpeg_reads_give_their_crop(tmp_path):
    from test_audio_formats import flac_reference, music, write_with_pyav

    samples = music(24000, 2.0, 2)
    path = write_with_pyav(tmp_path / "clip.m4a", samples, 24000, "alac")  # lossless
    crop, start = read_crop(str(path), 0.5, 12000)
    expected = flac_reference(tmp_path, samples, 24000, 24000)[start : start + 12000]
    np.testing.assert_allclose(crop, expected, atol=1e-6)
