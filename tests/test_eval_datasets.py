"""Dataset adapters on the real metadata in the shared data folder; expectations are computed
here with the csv module and numpy, never with the adapters themselves."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from culturemert.evaluate.datasets import ADAPTERS, Dataset, DatasetError, build_dataset
from culturemert.evaluate.datasets.fma import build_fma, build_fma_genre_top
from culturemert.evaluate.datasets.generic import build_generic
from culturemert.evaluate.datasets.lyra import build_lyra
from culturemert.evaluate.datasets.mtat import build_mtat

CCML_SIZES = {"makam": 30, "hindustani": 20, "carnatic": 20}


def expected_top(tag_lists, n):
    """Top-n tags by number of tracks, ties alphabetical: the rule of the ccml studies."""
    counts = Counter(tag for tags in tag_lists for tag in set(tags))
    return sorted(counts, key=lambda tag: (-counts[tag], tag))[:n]


def split_ids(dataset: Dataset) -> dict[str, set[str]]:
    ids = {"train": set(), "valid": set(), "test": set()}
    for track in dataset.tracks:
        ids[track.split].add(track.track_id)
    return ids


def write_tone(path: Path, seconds: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), 16000)


def read_tsv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# --- Lyra -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lyra(shared_data):
    return build_lyra(shared_data / "lyra")


def test_lyra_counts_and_split(lyra, shared_data):
    raw = read_tsv(shared_data / "lyra/raw.tsv")
    training = read_tsv(shared_data / "lyra/split/training.tsv")
    test = read_tsv(shared_data / "lyra/split/test.tsv")
    ids = split_ids(lyra)
    assert len(lyra.tracks) == len(raw) == 1570
    assert ids["test"] == {row["id"] for row in test} and len(ids["test"]) == 330
    assert ids["train"] | ids["valid"] == {row["id"] for row in training}
    assert not ids["train"] & ids["valid"]
    # about 10% of the 1,240 training pieces, as whole videos: GroupShuffleSplit takes
    # ceil(0.1 * 59 videos) = 6 videos.
    assert 0.04 * 1240 < len(ids["valid"]) < 0.2 * 1240
    videos_of = {row["id"]: row["youtube-id"] for row in raw}
    videos = {split: {videos_of[i] for i in members} for split, members in ids.items()}
    assert len({row["youtube-id"] for row in training}) == 59
    assert len(videos["valid"]) == 6
    assert not videos["train"] & videos["valid"]
    assert not (videos["train"] | videos["valid"]) & videos["test"]


def test_lyra_tags_and_vocabulary(lyra, shared_data):
    raw = {row["id"]: row for row in read_tsv(shared_data / "lyra/raw.tsv")}
    tags_of = {
        i: [f"{c}--{v}" for c in ("instruments", "genres", "place") for v in row[c].split("|")]
        for i, row in raw.items()
    }
    for track in lyra.tracks:
        assert sorted(track.tags) == sorted(tags_of[track.track_id])
        assert track.group == raw[track.track_id]["youtube-id"]
    train_ids = split_ids(lyra)["train"]
    assert lyra.vocabulary == expected_top([tags_of[i] for i in train_ids], 30)
    assert "instruments--Voice" in lyra.vocabulary
    assert "place--None" in {t for tags in tags_of.values() for t in tags}
    distinct = {tag for track in lyra.tracks for tag in track.tags}
    # 32 instruments, 32 genres, 82 place values (the literal None included): data README
    assert Counter(tag.split("--")[0] for tag in distinct) == {
        "instruments": 32,
        "genres": 32,
        "place": 82,
    }


def test_lyra_validation_is_seeded(lyra, shared_data):
    again = build_lyra(shared_data / "lyra")
    other = build_lyra(shared_data / "lyra", seed=1)
    assert split_ids(again)["valid"] == split_ids(lyra)["valid"]
    assert split_ids(other)["valid"] != split_ids(lyra)["valid"]


def test_lyra_missing_audio_is_reported_not_dropped(tmp_path, shared_data):
    root = tmp_path / "lyra"
    (root / "split").mkdir(parents=True)
    for name in ("raw.tsv", "split/training.tsv", "split/test.tsv"):
        (root / name).symlink_to(shared_data / "lyra" / name)
    test_ids = [row["id"] for row in read_tsv(root / "split/test.tsv")][:2]
    write_tone(root / "audio" / f"{test_ids[0]}.wav")
    write_tone(root / "audio" / "nested" / f"{test_ids[1]}.flac")
    dataset = build_lyra(root)
    assert len(dataset.tracks) == 1570
    assert len(dataset.missing) == 1568
    assert {t.track_id for t in dataset.split("test")} == set(test_ids)
    assert dataset.split("train") == []
    summary = dataset.missing_summary()
    assert "1568 of 1570" in summary and dataset.missing[0] in summary


# --- makam, Hindustani, Carnatic (ccml layout) ------------------------------------------------


def ccml_copy(tmp_path: Path, shared_data: Path, name: str) -> Path:
    root = tmp_path / name
    (root / "split").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (root / "split" / f"{split}.npy").symlink_to(
            shared_data / "ccml/data" / name / "split" / f"{split}.npy"
        )
    return root


def synthetic_tags(ids: list[str], seed: int) -> dict[str, list[str]]:
    """Skewed tags in three families, so that the top-N cut is meaningful."""
    rng = np.random.default_rng(seed)
    families = ("instrument", "raga", "tala")
    weights = 1.0 / np.arange(1, 41)
    draws = rng.choice(40, (len(ids), 4), p=weights / weights.sum()).tolist()
    return {
        i: sorted({f"{families[k % 3]}--t{k}" for k in ks})
        for i, ks in zip(ids, draws, strict=True)
    }


@pytest.mark.parametrize("name", ["makam", "hindustani", "carnatic"])
def test_ccml_datasets_on_real_splits(tmp_path, shared_data, name):
    root = ccml_copy(tmp_path, shared_data, name)
    real = {s: np.load(root / "split" / f"{s}.npy").tolist() for s in ("train", "valid", "test")}
    tags = synthetic_tags([i for ids in real.values() for i in ids], seed=len(name))
    (root / "split/metadata.json").write_text(json.dumps(tags))
    dataset = build_dataset(name, tmp_path)  # the shared-root form: <root>/<name>/
    ids = split_ids(dataset)
    for split in ("train", "valid", "test"):
        assert ids[split] == set(real[split])
        assert len(ids[split]) == len(real[split])
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"]
    assert not ids["valid"] & ids["test"]
    expected_sizes = {
        "makam": (3709, 529, 1059),
        "hindustani": (844, 120, 240),
        "carnatic": (1829, 261, 522),
    }[name]
    assert tuple(len(real[s]) for s in ("train", "valid", "test")) == expected_sizes
    assert dataset.vocabulary == expected_top([tags[i] for i in real["train"]], CCML_SIZES[name])
    assert len(dataset.missing) == len(dataset.tracks)
    # The protocol's truncation of long recordings (ccml's table), kept through save/load.
    assert dataset.max_seconds == {"makam": 150, "hindustani": 780, "carnatic": 330}[name]
    assert Dataset.load(dataset.save(tmp_path / "saved")).max_seconds == dataset.max_seconds


def test_ccml_metadata_as_csv(tmp_path, shared_data):
    root = ccml_copy(tmp_path, shared_data, "hindustani")
    ids = [i for s in ("train", "valid", "test") for i in np.load(root / f"split/{s}.npy").tolist()]
    tags = synthetic_tags(ids, seed=3)
    with (root / "split/metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "tags"])
        writer.writerows([i, "|".join(t)] for i, t in tags.items())
    dataset = build_dataset("hindustani", root)
    assert {t.track_id: sorted(t.tags) for t in dataset.tracks} == tags


class _Sentinel:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_ccml_pickled_metadata_is_never_loaded(tmp_path, shared_data):
    root = ccml_copy(tmp_path, shared_data, "carnatic")
    sentinel = tmp_path / "unpickled"
    np.save(root / "split/metadata.npy", np.array(_Sentinel(str(sentinel)), dtype=object))
    with pytest.raises(DatasetError, match="pickle") as error:
        build_dataset("carnatic", root)
    assert "metadata.json" in str(error.value) and "allow_pickle=True" in str(error.value)
    assert not sentinel.exists()


def test_ccml_ids_without_tags_are_an_error(tmp_path, shared_data):
    root = ccml_copy(tmp_path, shared_data, "makam")
    train = np.load(root / "split/train.npy").tolist()
    (root / "split/metadata.json").write_text(json.dumps({i: ["makam--Hicaz"] for i in train}))
    with pytest.raises(DatasetError, match=r"1588 ids of the split have no entry"):
        build_dataset("makam", root)


# --- FMA --------------------------------------------------------------------------------------

GENRES = [  # genre_id, parent, title: two levels, 16 top-level genres as in FMA
    *[(str(k), "0", f"Top{k}") for k in range(1, 17)],
    *[(str(100 + k), str(1 + k % 16), f"Sub{k}") for k in range(40)],
]


def write_fma(root: Path, ids: list[str], seed: int = 0, all_medium: bool = False) -> list[dict]:
    """tracks.csv and genres.csv in FMA's layout (three header rows); returns the rows."""
    rng = np.random.default_rng(seed)
    subs, tops = rng.zipf(1.5, len(ids)).tolist(), rng.integers(16, size=len(ids)).tolist()
    meta = root / "fma_metadata"
    meta.mkdir(parents=True)
    with (meta / "genres.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        writer.writerows([g, 1, p, t, g if p == "0" else p] for g, p, t in GENRES)
    title = {g: t for g, _, t in GENRES}
    rows = []
    for n, track_id in enumerate(ids):
        sub, top = str(100 + subs[n] % 40), str(1 + tops[n])
        subset = ("small", "medium", "medium", "large")[n % 4]
        rows.append(
            {
                "id": int(track_id),
                "split": ("training", "validation", "test")[n % 10 // 8 + (n % 10 == 9)],
                "subset": "medium" if all_medium else subset,
                "genre_top": title[top],
                "genres_all": [int(top), int(sub)],
            }
        )
    with (meta / "tracks.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "album", "set", "set", "track", "track", "track"])
        writer.writerow(["", "title", "split", "subset", "genre_top", "genres", "genres_all"])
        writer.writerow(["track_id", "", "", "", "", "", ""])
        for row in rows:
            writer.writerow(
                [
                    row["id"],
                    "An album, with a comma",
                    row["split"],
                    row["subset"],
                    row["genre_top"],
                    json.dumps(row["genres_all"][1:]),
                    json.dumps(row["genres_all"]),
                ]
            )
    for row in rows:
        row["tags"] = [f"genre--{title[str(g)]}" for g in row["genres_all"]]
    return rows


def test_fma_multilabel_on_ccml_split(tmp_path, shared_data):
    root = tmp_path / "fma"
    (root / "split").mkdir(parents=True)
    real = {}
    for split in ("train", "valid", "test"):
        (root / f"split/{split}.npy").symlink_to(shared_data / f"ccml/data/fma/split/{split}.npy")
        real[split] = np.load(root / f"split/{split}.npy").tolist()
    all_ids = [i for ids in real.values() for i in ids]
    rows = write_fma(root, all_ids, all_medium=True)  # every ccml id is an FMA-medium track
    rows_by_id = {f"{row['id']:06d}": row for row in rows}

    dataset = build_dataset("fma", tmp_path)
    ids = split_ids(dataset)
    assert {s: len(v) for s, v in ids.items()} == {"train": 17486, "valid": 2498, "test": 4996}
    assert all(ids[s] == set(real[s]) for s in ids)
    assert not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert dataset.vocabulary == expected_top([rows_by_id[i]["tags"] for i in real["train"]], 20)
    track = next(t for t in dataset.tracks if t.track_id == real["test"][0])
    assert sorted(track.tags) == sorted(rows_by_id[real["test"][0]]["tags"])


def test_fma_official_split_and_genre_top(tmp_path):
    root = tmp_path / "fma"
    rows = write_fma(root, [str(i) for i in range(2, 3002)], seed=1)
    medium = [r for r in rows if r["subset"] in ("small", "medium")]
    official = {"training": "train", "validation": "valid", "test": "test"}
    write_tone(root / "audio" / "000" / f"{medium[0]['id']:06d}.wav")

    multi = build_fma(root)
    assert len(multi.tracks) == len(medium)
    expected_splits = Counter(official[r["split"]] for r in medium)
    assert Counter(t.split for t in multi.tracks) == expected_splits
    train_tags = [r["tags"] for r in medium if r["split"] == "training"]
    assert multi.vocabulary == expected_top(train_tags, 20)
    assert len(multi.missing) == len(medium) - 1

    single = build_fma_genre_top(root)
    assert all(len(t.tags) == 1 for t in single.tracks)
    train_top = Counter(r["genre_top"] for r in medium if r["split"] == "training")
    assert set(single.vocabulary) == {f"genre--{g}" for g in train_top}
    assert len(single.vocabulary) == 16
    labels = single.label_matrix(single.tracks)
    assert np.array_equal(labels.sum(axis=1), np.ones(len(single.tracks)))


def test_fma_ccml_ids_outside_medium_are_an_error(tmp_path):
    root = tmp_path / "fma"
    write_fma(root, [str(i) for i in range(2, 50)])
    (root / "split").mkdir()
    for split in ("train", "valid", "test"):
        np.save(root / f"split/{split}.npy", np.array(["999999"]))
    with pytest.raises(DatasetError, match="not FMA-medium tracks"):
        build_fma(root)


# --- MagnaTagATune ----------------------------------------------------------------------------


def mtat_copy(tmp_path: Path, shared_data: Path, extra_train: int = 300) -> tuple[Path, dict]:
    """The real split files plus a generated annotations_final.csv holding their clips."""
    root = tmp_path / "mtat"
    root.mkdir()
    for name in ("tags.npy", "valid.npy", "test.npy"):
        (root / name).symlink_to(shared_data / "mtat" / name)
    tags = np.load(root / "tags.npy").tolist()
    valid = [e.split("\t")[1] for e in np.load(root / "valid.npy").tolist()]
    test = [e.split("\t")[1] for e in np.load(root / "test.npy").tolist()]
    in_split = set(valid) | set(test)
    rng = np.random.default_rng(0)
    train = [f"{'0123456789ab'[k % 12]}/artist-album-{k}-0-29.mp3" for k in range(extra_train)]
    outside = [f"d/not-in-split-{k}.mp3" for k in range(20)]
    columns = ["clip_id", "singer", *tags, "duet", "mp3_path"]
    rows, positives = [], {}
    clips = valid + test + train + outside
    draws = (rng.random((len(clips), len(tags))) < 0.08).astype(int).tolist()
    for clip_id, path in enumerate(clips):
        flags = dict(zip(tags, draws[clip_id], strict=True))
        if path in in_split:
            flags[tags[clip_id % 50]] = 1  # the split keeps only clips with a top-50 tag
        elif clip_id % 10 == 0:
            flags = dict.fromkeys(tags, 0)
        positives[path] = [t for t in tags if flags[t]]
        rows.append([str(clip_id), "1", *(str(flags[t]) for t in tags), "0", path])
    with (root / "annotations_final.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        writer.writerows(rows)
    return root, {
        "tags": tags,
        "valid": valid,
        "test": test,
        "train": train,
        "positives": positives,
    }


def test_mtat_standard_split(tmp_path, shared_data):
    root, real = mtat_copy(tmp_path, shared_data)
    dataset = build_mtat(root)
    by_split = {s: [t for t in dataset.tracks if t.split == s] for s in ("train", "valid", "test")}
    assert len(by_split["valid"]) == 1529 and len(by_split["test"]) == 4332
    folder = {s: {Path(t.path).parent.name for t in ts} for s, ts in by_split.items()}
    assert folder["valid"] == {"c"} and folder["test"] == {"d", "e", "f"}
    expected_train = [p for p in real["train"] if real["positives"][p]]
    assert len(expected_train) < len(real["train"])  # clips without a top-50 tag are left out
    assert sorted(Path(t.path).name for t in by_split["train"]) == sorted(
        Path(p).name for p in expected_train
    )
    assert dataset.vocabulary == [f"tag--{t}" for t in real["tags"]]
    assert dataset.vocabulary[21] == "tag--no vocals"
    track = by_split["test"][5]
    relative = str(Path(track.path).relative_to(root / "audio"))
    assert sorted(track.tags) == sorted(f"tag--{t}" for t in real["positives"][relative])


def test_mtat_train_list_is_used_when_present(tmp_path, shared_data):
    root, real = mtat_copy(tmp_path, shared_data, extra_train=24)
    chosen = real["train"][:5]
    np.save(root / "train.npy", np.array([f"{k}\t{p}" for k, p in enumerate(chosen)]))
    dataset = build_mtat(root)
    assert sorted(Path(t.path).name for t in dataset.tracks if t.split == "train") == sorted(
        Path(p).name for p in chosen
    )


# --- generic manifests, save/load, label matrix -----------------------------------------------


def test_generic_manifest_with_grouped_validation(tmp_path):
    root = tmp_path / "mine"
    rows = []
    for k in range(40):
        split = "test" if k >= 32 else "train"
        if k % 5:
            write_tone(root / "clips" / f"c{k}.wav")
        rows.append(
            {
                "track_id": f"c{k}",
                "path": f"clips/c{k}.wav",
                "split": split,
                "group": f"session{k // 4}",
                "tags": "mood--calm|dance" if k % 2 else "fast",
            }
        )
    root.mkdir(exist_ok=True)
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dataset = build_dataset("generic", root)
    groups = {s: {t.group for t in dataset.tracks if t.split == s} for s in ("train", "valid")}
    assert groups["valid"] and not groups["train"] & groups["valid"]
    assert sorted(dataset.vocabulary) == ["mood--calm", "tag--dance", "tag--fast"]
    assert sorted(dataset.missing) == sorted(f"c{k}" for k in range(40) if k % 5 == 0)
    assert all(Path(t.path).is_absolute() for t in dataset.tracks)

    labels = dataset.label_matrix(dataset.tracks)
    column = {tag: j for j, tag in enumerate(dataset.vocabulary)}
    for row, track in zip(labels, dataset.tracks, strict=True):
        k = int(track.track_id[1:])
        expected = np.zeros(3, dtype=np.float32)
        for tag in ["mood--calm", "tag--dance"] if k % 2 else ["tag--fast"]:
            expected[column[tag]] = 1
        assert np.array_equal(row, expected)
    assert labels.dtype == np.float32

    saved = dataset.save(tmp_path / "saved")
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.jsonl", "vocabulary.json"]
    loaded = Dataset.load(saved)
    assert loaded.tracks == dataset.tracks
    assert loaded.vocabulary == dataset.vocabulary and loaded.missing == dataset.missing
    assert loaded.max_seconds is None  # user datasets are encoded whole


def test_generic_rejects_unknown_split_values(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"track_id": "a", "path": "a.wav", "split": "training", "tags": ["x--y"]}) + "\n"
    )
    with pytest.raises(DatasetError, match=r"'training' \(1 tracks\)"):
        build_generic(tmp_path)


# --- the registry -----------------------------------------------------------------------------


def test_build_dataset_errors_name_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="unknown task 'lyrra'.*lyra, makam"):
        build_dataset("lyrra", tmp_path)
    with pytest.raises(DatasetError) as error:
        build_dataset("lyra", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "lyra") in message
    assert all(name in message for name in ("raw.tsv", "split/training.tsv", "split/test.tsv"))
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("mtat", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="valid.npy"):
        build_dataset("makam", tmp_path)


def test_registry_covers_the_six_datasets():
    assert {
        "lyra",
        "makam",
        "hindustani",
        "carnatic",
        "fma",
        "fma-genre-top",
        "mtat",
        "generic",
    } == set(ADAPTERS)
