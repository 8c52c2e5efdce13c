"""Atomic writes: whole files with the usual permissions, nothing left behind on failure."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from culturemert.atomic import atomic_path, save_npy, write_text


def test_files_appear_whole_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a" / "note.txt", "hello")
        save_npy(tmp_path / "x.npy", np.arange(5))
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "note.txt").read_text() == "hello"
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(5))
    assert stat.S_IMODE((tmp_path / "x.npy").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "note.txt", "x.npy"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text(tmp_path / "result.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_directories_replace_whole_or_not_at_all(tmp_path):
    from culturemert.atomic import atomic_directory

    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"
    with atomic_directory(target) as staging:
        (staging / "b.txt").write_text("second")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
