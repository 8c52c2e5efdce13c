"""Corpus extraction: outputs per track, failures, resuming, manifests and rank shares."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from culturemert.cli import main
from culturemert.extract import ExtractSettings, collect_inputs, extract_corpus
from culturemert.model import load_encoder


@pytest.fixture()
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", 0.3 * rng.standard_normal(24000), 24000)
    sf.write(root / "sub" / "b.flac", 0.3 * rng.standard_normal((16000, 2)), 16000)
    sf.write(root / "c.ogg", 0.3 * rng.standard_normal(30000), 22050)
    (root / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def expected_features(encoder_dir, path):
    """Mean-pooled hidden states by a direct HubertModel forward on the decoded file."""
    import soxr

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    waveform = soxr.resample(data.mean(axis=1), rate, 24000, quality="HQ").astype(np.float32)
    model = load_encoder(encoder_dir, attn_implementation="eager")
    with torch.no_grad():
        states = model(torch.from_numpy(waveform)[None], output_hidden_states=True).hidden_states
    return torch.stack(states)[:, 0].mean(dim=1).numpy()


def test_folder_extraction_via_cli(tiny_encoder_dir, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["extract", str(tiny_encoder_dir), str(corpus), "--out", str(out), "--window-seconds", "0"]
    )
    assert code == 1  # one input failed
    features = out / "features"
    assert sorted(p.relative_to(features).as_posix() for p in features.rglob("*.npy")) == [
        "a.npy",
        "c.npy",
        "sub/b.npy",
    ]
    np.testing.assert_allclose(
        np.load(features / "sub" / "b.npy"),
        expected_features(tiny_encoder_dir, corpus / "sub" / "b.flac"),
        rtol=1e-4,
        atol=1e-5,
    )
    failures = (out / "failures.tsv").read_text().splitlines()
    assert failures[0] == "path\treason" and len(failures) == 2
    assert failures[1].startswith(str(corpus / "broken.wav")) and "cannot decode" in failures[1]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert {row["track_id"]: row["shape"] for row in index} == {
        "a": [3, 32],
        "c": [3, 32],
        "sub/b": [3, 32],
    }
    assert not [p for p in out.rglob(".*")]  # nothing half-written is left
    assert "1 failed" in capsys.readouterr().out


def test_default_embeds_long_recordings_in_30_s_windows(tiny_encoder_dir, tmp_path, capsys):
    rate = 24000
    wave = 0.3 * np.random.default_rng(5).standard_normal(65 * rate).astype(np.float32)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "long.wav", wave, rate)
    out = tmp_path / "out"
    assert main(["extract", str(tiny_encoder_dir), str(tmp_path / "in"), "--out", str(out)]) == 0
    features = np.load(out / "features" / "long.npy")
    assert features.shape == (3, 3, 32)  # 30 s + 30 s + a 5 s tail
    encoder = load_encoder(tiny_encoder_dir)
    decoded = sf.read(tmp_path / "in" / "long.wav", dtype="float32")[0]  # as stored (16 bit)
    with torch.no_grad():
        tail = encoder(torch.from_numpy(decoded[60 * rate :])[None], output_hidden_states=True)
    expected = torch.stack(tail.hidden_states)[:, 0].mean(1).numpy()
    np.testing.assert_allclose(features[:, 2], expected, rtol=1e-4, atol=1e-5)
    assert "warning" not in capsys.readouterr().err
    # A whole-track run is possible, but said to be costly.
    whole = tmp_path / "whole"
    args = ["extract", str(tiny_encoder_dir), str(tmp_path / "in"), "--out", str(whole)]
    assert main([*args, "--window-seconds", "0"]) == 0
    assert (
        "1 track(s) longer than 30 s (longest 65 s) are embedded whole" in capsys.readouterr().err
    )
    assert np.load(whole / "features" / "long.npy").shape == (3, 32)


def test_track_ids_become_safe_names_inside_the_output(tiny_encoder_dir, corpus, tmp_path):
    manifest = corpus / "list.csv"
    manifest.write_text(
        "track_id,path\n../../escaped,a.wav\n/etc/absolute,c.ogg\nsub/.hidden/x y,sub/b.flac\n"
    )
    out = tmp_path / "deep" / "out"
    assert main(["extract", str(tiny_encoder_dir), str(manifest), "--out", str(out)]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npy"))
    assert written == [
        "deep/out/features/escaped.npy",
        "deep/out/features/etc/absolute.npy",
        "deep/out/features/sub/hidden/x_y.npy",
    ]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert {row["track_id"]: row["features"] for row in index} == {
        "../../escaped": "features/escaped.npy",
        "/etc/absolute": "features/etc/absolute.npy",
        "sub/.hidden/x y": "features/sub/hidden/x_y.npy",
    }


def test_set_overrides_settings_and_bad_values_are_named(
    tiny_encoder_dir, corpus, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["extract", str(tiny_encoder_dir), str(corpus), "--out", str(out)]
    assert main([*args, "--set", "window_seconds=0.5", "--set", "layers=[0, 2]"]) == 1
    assert np.load(out / "features" / "c.npy").shape == (2, 3, 32)  # 1.36 s: 3 windows, 2 layers
    assert json.loads((out / "settings.json").read_text())["layers"] == [0, 2]
    assert main([*args, "--set", "pool=median"]) == 2
    assert "extract settings: pool must be one of mean, max, mean+std, none, got 'median'" in (
        capsys.readouterr().err
    )


def test_ids_that_collide_after_mapping_are_refused_by_name(
    tiny_encoder_dir, corpus, tmp_path, capsys
):
    manifest = corpus / "clash.csv"
    manifest.write_text("track_id,path\nSong 1,a.wav\nother,c.ogg\nsong_1,sub/b.flac\n")
    out = tmp_path / "out"
    assert main(["extract", str(tiny_encoder_dir), str(manifest), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "'Song 1'" in error and "'song_1'" in error and "features/song_1.npy" in error
    assert not out.exists()  # refused before anything was written


def test_resume_skips_finished_and_refuses_other_settings(tiny_encoder_dir, corpus, tmp_path):
    encoder = load_encoder(tiny_encoder_dir)
    items = [item for item in collect_inputs(corpus) if item[0] != "broken"]
    out = tmp_path / "out"
    settings = ExtractSettings(window_seconds=0.5)
    first = extract_corpus(encoder, items, out, settings=settings, num_workers=0, progress=False)
    assert (first.done, first.skipped) == (3, 0)
    kept = out / "features" / "a.npy"
    before = kept.stat().st_mtime_ns
    (out / "features" / "c.npy").unlink()
    second = extract_corpus(encoder, items, out, settings=settings, num_workers=0, progress=False)
    assert (second.done, second.skipped) == (1, 2)
    assert kept.stat().st_mtime_ns == before
    assert np.load(out / "features" / "c.npy").shape == (3, 3, 32)  # 1.36 s → 2 full + tail
    with pytest.raises(ValueError, match="other settings"):
        extract_corpus(encoder, items, out, settings=ExtractSettings(), progress=False)


def test_manifest_input_and_rank_shares(tiny_encoder_dir, corpus, tmp_path):
    manifest = corpus / "list.csv"
    manifest.write_text("track_id,path\nfirst,a.wav\nsecond,sub/b.flac\nthird,c.ogg\n")
    items = collect_inputs(manifest)
    assert [(t, p.name) for t, p in items] == [
        ("first", "a.wav"),
        ("second", "b.flac"),
        ("third", "c.ogg"),
    ]
    encoder = load_encoder(tiny_encoder_dir)
    out = tmp_path / "out"
    for rank in (0, 1):
        extract_corpus(
            encoder,
            items,
            out,
            settings=ExtractSettings(),
            rank=rank,
            world_size=2,
            num_workers=0,
            progress=False,
        )
    shares = [
        [json.loads(x)["track_id"] for x in (out / f"index.rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    assert shares == [["first", "third"], ["second"]]


def test_frame_level_extraction_writes_every_frame_with_its_time(tiny_encoder_dir, tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    sf.write(root / "a.wav", 0.3 * np.random.default_rng(3).standard_normal(30000), 24000)
    out = tmp_path / "frames"
    args = ["extract", str(tiny_encoder_dir), str(root), "--out", str(out), "--pool", "none"]
    assert main([*args, "--window-seconds", "0.3", "--layers", "0,2"]) == 0
    [row] = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    features, times = np.load(out / row["features"]), np.load(out / row["timestamps"])
    # One whole forward gives floor((30000 - 400) / 320) + 1 = 93 frames, centred at 320 i + 200.
    assert features.shape == tuple(row["shape"]) == (2, 93, 32)
    np.testing.assert_allclose(times, (320 * np.arange(93) + 200) / 24000, rtol=0, atol=1e-12)
    bad = main([*args, "--drop-last", "--out", str(tmp_path / "other")])
    assert bad == 2
