"""Precomputed targets: files, resumption, teacher tagging, refusal of foreign targets, CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from culturemert.audio import load_audio
from culturemert.cli import main
from culturemert.manifest import Track, write_manifest
from culturemert.teachers import KMeansTeacher, fit_kmeans_teacher
from culturemert.teachers.targets import (
    TargetsError,
    compute_targets,
    load_targets,
    targets_teacher,
)

SR = 24000


@pytest.fixture()
def corpus(tmp_path):
    """Four short tracks (different lengths, one at 16 kHz) and a manifest beside them."""
    rng = np.random.default_rng(0)
    tracks = []
    for i, (seconds, rate) in enumerate([(1.0, SR), (1.3, SR), (0.7, 16000), (1.1, SR)]):
        t = np.arange(int(seconds * rate)) / rate
        audio = 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(tmp_path / f"song {i}.wav", audio.astype(np.float32), rate)
        tracks.append(Track(track_id=f"tradition/song {i}", path=f"song {i}.wav"))
    manifest = write_manifest(tmp_path / "corpus.jsonl", tracks)
    return tmp_path, manifest, tracks


@pytest.fixture(scope="module")
def teacher():
    rng = np.random.default_rng(1)
    return fit_kmeans_teacher(
        [rng.standard_normal(SR).astype(np.float32) for _ in range(2)], ["mfcc:4"], progress=False
    )


def test_each_track_gets_its_teachers_int16_codes(corpus, teacher):
    root, _, tracks = corpus
    summary = compute_targets(teacher, tracks, root, root / "targets", progress=False)
    assert (summary.computed, summary.skipped, summary.failed) == (4, 0, {})
    targets = load_targets(root / "targets", teacher.hash, [t.track_id for t in tracks])
    for track in tracks:
        codes = targets.codes(track.track_id)
        expected = teacher(load_audio(root / track.path, SR))
        assert codes.dtype == np.int16 and (codes == expected).all()
        assert teacher.hash[:12] in targets.entries[track.track_id]["file"]
    assert summary.frames == sum(targets.entries[t.track_id]["frames"] for t in tracks)
    index = json.loads((root / "targets" / "index.json").read_text())
    assert index["teacher_hash"] == teacher.hash and index["codebook_sizes"] == [4]


def test_a_second_run_resumes_without_recomputing(corpus, teacher):
    root, _, tracks = corpus
    out = root / "targets"
    compute_targets(teacher, tracks[:2], root, out, progress=False)
    first = out / load_targets(out, teacher.hash).entries[tracks[0].track_id]["file"]
    stamp = first.stat().st_mtime_ns
    summary = compute_targets(teacher, tracks, root, out, progress=False)
    assert (summary.computed, summary.skipped) == (2, 2)
    assert first.stat().st_mtime_ns == stamp
    (out / "index.json").unlink()  # a killed run writes no index: the tagged files still count
    summary = compute_targets(teacher, tracks, root, out, progress=False)
    assert (summary.computed, summary.skipped) == (0, 4)
    assert len(load_targets(out, teacher.hash, [t.track_id for t in tracks]).entries) == 4


def test_an_interrupted_run_leaves_whole_files_and_an_index(corpus, teacher):
    root, _, tracks = corpus
    out = root / "targets"
    calls = []

    class Failing:
        name, hash, codebook_sizes = teacher.name, teacher.hash, teacher.codebook_sizes

        def __call__(self, waveform):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return teacher(waveform)

    with pytest.raises(KeyboardInterrupt):
        compute_targets(Failing(), tracks, root, out, progress=False)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written file
    partial = load_targets(out, teacher.hash, [t.track_id for t in tracks], require_all=False)
    assert partial.missing == [tracks[2].track_id, tracks[3].track_id]
    with pytest.raises(TargetsError, match="2 track"):
        load_targets(out, teacher.hash, [t.track_id for t in tracks])
    summary = compute_targets(teacher, tracks, root, out, progress=False)
    assert (summary.computed, summary.skipped) == (2, 2)


def test_targets_of_another_teacher_are_refused(corpus, teacher):
    root, _, tracks = corpus
    compute_targets(teacher, tracks, root, root / "targets", progress=False)
    rng = np.random.default_rng(2)
    other = fit_kmeans_teacher(
        [rng.standard_normal(SR).astype(np.float32)], ["mfcc:3"], progress=False
    )
    with pytest.raises(TargetsError, match="made by teacher kmeans\\(mfcc:4\\)"):
        load_targets(root / "targets", other.hash)
    with pytest.raises(TargetsError, match="another --out"):
        compute_targets(other, tracks, root, root / "targets", progress=False)
    with pytest.raises(TargetsError, match="no index.json"):
        load_targets(root / "elsewhere", teacher.hash)


def test_unreadable_audio_is_recorded_not_missing(corpus, teacher):
    root, _, tracks = corpus
    (root / "broken.wav").write_bytes(b"RIFF not really audio")
    broken = Track(track_id="broken", path="broken.wav")
    summary = compute_targets(teacher, [*tracks, broken], root, root / "targets", progress=False)
    assert list(summary.failed) == ["broken"] and summary.computed == 4
    targets = load_targets(root / "targets", teacher.hash, [t.track_id for t in [*tracks, broken]])
    assert targets.missing == [] and "broken" in targets.failed


def test_cli_fits_a_teacher_and_computes_targets(corpus, capsys):
    root, manifest, tracks = corpus
    out = root / "cli-targets"
    code = main(
        [
            "targets",
            "fit-kmeans",
            str(manifest),
            "--out",
            str(out),
            "--codebook",
            "mfcc:3",
            "--codebook",
            "logmel+chroma:2",
            "--max-frames",
            "500",
        ]
    )
    assert code == 0
    teacher = KMeansTeacher.load(out / "teacher.safetensors")
    assert teacher.codebook_sizes == [3, 2]
    assert teacher.hash in capsys.readouterr().out
    targets = load_targets(out, teacher.hash, [t.track_id for t in tracks])
    assert targets.codes(tracks[1].track_id).shape[0] == 2
    # the saved teacher labels a manifest again: everything is already done
    assert (
        main(["targets", str(out / "teacher.safetensors"), str(manifest), "--out", str(out)]) == 0
    )
    assert re.search(r"skipped \(done before\)\s+4\n", capsys.readouterr().out)
    assert main(["targets", "fit-kmeans", str(manifest), "--out", str(out)]) == 2


def test_cli_takes_its_settings_by_set(corpus, capsys):
    root, manifest, tracks = corpus
    out, saved = root / "set-targets", root / "elsewhere" / "t.safetensors"
    argv = ["targets", "fit-kmeans", str(manifest), "--out", str(out)]
    sets = ["codebooks=[mfcc:3]", "max_frames=500", f"teacher_out={saved}"]
    assert main([*argv, *(arg for s in sets for arg in ("--set", s))]) == 0
    teacher = KMeansTeacher.load(saved)
    assert teacher.codebook_sizes == [3]
    assert load_targets(out, teacher.hash, [t.track_id for t in tracks]).missing == []
    assert main([*argv, "--codebook", "mfcc:3", "--set", "max_frames=many"]) == 1
    assert "max_frames: expected an integer" in capsys.readouterr().err


def test_the_teacher_of_a_target_folder_is_read_from_its_index(corpus, teacher):
    root, _, tracks = corpus
    compute_targets(teacher, tracks, root, root / "targets", progress=False)
    stored = json.loads((root / "targets" / "index.json").read_text())
    assert stored["teacher_hash"] == teacher.hash
    assert targets_teacher(root / "targets") == (teacher.hash, list(teacher.codebook_sizes))
    with pytest.raises(TargetsError, match="no index.json"):
        targets_teacher(root / "nowhere")
