"""Experiment loggers: what TensorBoard (and W&B) receive equals the CSV and JSON each command
writes, read back by an independent reader of the event files."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from merge_reference import make_checkpoints
from pretrain_corpus import corpus_recipe, stage

from culturemert.cli import main
from culturemert.loggers import LoggerError, logger_names, require_loggers
from culturemert.pretrain.metrics_log import MetricsLog
from culturemert.pretrain.recipe import RecipeError, recipe_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _tfrecords(path: Path):
    """The records of a TFRecord file: 8-byte length, 4-byte crc, data, 4-byte crc."""
    data, position = path.read_bytes(), 0
    while position < len(data):
        (length,) = struct.unpack("<Q", data[position : position + 8])
        position += 12
        yield data[position : position + length]
        position += length + 4


def tensorboard_events(folder: Path) -> list:
    """Every event of a TensorBoard run folder, decoded with tensorboardX's protobuf classes."""
    from tensorboardX.proto.event_pb2 import Event

    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event files in {folder}"
    return [Event.FromString(record) for path in files for record in _tfrecords(path)]


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) points by tag, as TensorBoard shows them (a restart purges later steps)."""
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        return {
            tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]
        }
    from tensorboardX.proto.event_pb2 import SessionLog

    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in tensorboard_events(folder):
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            for tag, points in scalars.items():
                scalars[tag] = [(step, value) for step, value in points if step < event.step]
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def tensorboard_hparams(folder: Path) -> dict:
    """The hyperparameters of the run's last hparams record (TensorBoard's HParams plugin)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    found = {}
    for event in tensorboard_events(folder):
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                found = {
                    name: getattr(entry, entry.WhichOneof("kind"))
                    for name, entry in data.session_start_info.hparams.items()
                }
    return found


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_names_are_split_checked_and_kept_once():
    assert logger_names(["tensorboard,wandb", " TensorBoard "]) == ("tensorboard", "wandb")
    assert logger_names([]) == ()
    with pytest.raises(
        LoggerError, match="--logger: unknown logger 'tb'; use tensorboard or wandb"
    ):
        logger_names(["tensorboard,tb"])


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, tiny_encoder_dir) -> Path:
    """A four-update pre-training recipe on the generated tone corpus."""
    folder = tmp_path_factory.mktemp("recipe")
    raw = corpus_recipe(folder, tiny_encoder_dir, stages=[stage("heads", ["heads"], 4)])
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class Killed(Exception):
    """Stands for the process being killed."""


def test_pretrain_scalars_equal_metrics_csv_across_a_resume(recipe_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    write = MetricsLog.write

    def write_then_die(self, row):
        write(self, row)
        if row["global_step"] == 3:  # logged past the checkpoint at update 2
            raise Killed

    monkeypatch.setattr(MetricsLog, "write", write_then_die)
    args = ["pretrain", str(recipe_file), "--out", str(out), "--logger", "tensorboard"]
    with pytest.raises(Killed):
        main(args)
    monkeypatch.setattr(MetricsLog, "write", write)
    assert main([*args, "--resume"]) == 0

    rows = read_csv(out / "metrics.csv")
    assert [int(row["global_step"]) for row in rows] == [1, 2, 3, 4]
    folder = out / "logs" / "tensorboard"
    scalars = tensorboard_scalars(folder)
    numeric = [key for key in rows[0] if key not in ("global_step", "stage")]
    assert set(scalars) == set(numeric)
    for key in numeric:  # the interrupted run's step 3 is purged, not shown beside the new one
        expected = [(int(row["global_step"]), float(row[key])) for row in rows]
        assert [step for step, _ in scalars[key]] == [step for step, _ in expected], key
        assert [value for _, value in scalars[key]] == [
            pytest.approx(value, rel=1e-6, abs=1e-12) for _, value in expected
        ], key
    assert {"loss", "lr", "accuracy_0", "accuracy_1", "audio_hours_per_hour"} <= set(scalars)

    written = yaml.safe_load((out / "recipe.yaml").read_text())
    hparams = tensorboard_hparams(folder)
    assert hparams["seed"] == written["seed"]
    assert hparams["engine/loggers"] == str(written["engine"]["loggers"])
    assert written["engine"]["loggers"] == ["tensorboard"]


def test_recipe_loggers_are_checked_by_name(recipe_file):
    raw = yaml.safe_load(recipe_file.read_text())
    with pytest.raises(RecipeError, match=r"engine\.loggers: unknown logger 'tb'"):
        recipe_from_dict(raw, ["engine.loggers=[tb]"], where="r.yaml")
    assert recipe_from_dict(raw, ["engine.loggers=[wandb]"]).engine.loggers == ["wandb"]


def tone(hz: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def tagged_tones(tmp_path_factory) -> Path:
    """Two tags (low and high tones) over 24 short clips in one generic task."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(3)
    (root / "generic").mkdir()
    rows = []
    for i in range(24):
        tag = "pitch--high" if i % 2 else "pitch--low"
        sf.write(root / "generic" / f"{i}.wav", tone(880.0 if i % 2 else 220.0, 0.3, rng), 24000)
        split = "train" if i < 12 else "valid" if i < 18 else "test"
        rows.append({"track_id": str(i), "path": f"{i}.wav", "tags": [tag], "split": split})
    (root / "generic" / "manifest.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    return root


def test_evaluate_logs_the_results_files_numbers(tagged_tones, tmp_path, capsys):
    out = tmp_path / "eval" / "chroma.json"
    options = ["--tasks", "generic", "--data-root", str(tagged_tones), "--out", str(out)]
    options += ["--cache", str(tmp_path / "cache"), "--seeds", "2", "--probes", "linear"]
    options += ["--lrs", "1e-2", "--max-epochs", "2", "--window-seconds", "0", "--quiet"]
    assert main(["evaluate", "features:chroma", *options, "--logger", "tensorboard"]) == 0
    results = json.loads(out.read_text())
    task = results["tasks"]["generic"]

    (row,) = read_csv(out.with_suffix(".csv"))
    assert row["task"] == "generic"
    assert (row["layer"], row["probe"]) == (str(task["selected"]["layer"]), "linear")
    assert float(row["lr"]) == task["selected"]["lr"]
    assert float(row["validation_roc_auc"]) == task["validation"]["roc_auc"]["mean"]

    scalars = dict(
        (tag, dict(points))
        for tag, points in tensorboard_scalars(
            out.parent / "logs" / "tensorboard" / "chroma"
        ).items()
    )
    assert scalars["generic/validation_roc_auc"][0] == pytest.approx(
        task["validation"]["roc_auc"]["mean"], rel=1e-6
    )
    for metric in ("roc_auc", "map", "micro_f1", "macro_f1"):
        summary = task["metrics"][metric]
        assert float(row[metric]) == summary["mean"]
        assert float(row[f"{metric}_std"]) == summary["std"]
        assert scalars[f"generic/{metric}"][0] == pytest.approx(summary["mean"], rel=1e-6)
        assert scalars[f"generic/{metric}_std"][0] == pytest.approx(summary["std"], abs=1e-7)
    hparams = tensorboard_hparams(out.parent / "logs" / "tensorboard" / "chroma")
    assert hparams["model"] == "features:chroma"
    assert hparams["generic/probe"] == "linear"
    assert hparams["generic/lr"] == pytest.approx(task["selected"]["lr"])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    return make_checkpoints(tmp_path_factory.mktemp("sweep"))


SCORER = (
    "import json, pathlib\n"
    "def score(model_dir):\n"
    "    card = pathlib.Path(model_dir, 'README.md').read_text()\n"
    "    lam = json.loads(card.split('lambda: ')[1].split()[0])\n"
    "    return 1.0 - (lam - 0.3) ** 2\n"
)


def sweep_args(checkpoints: dict, out: Path) -> list[str]:
    args = ["merge", "--base", str(checkpoints["base"]), "--models"]
    args += [str(m) for m in checkpoints["models"]]
    return args + [
        "--sweep",
        "0.1:0.5:0.2",
        "--select-on",
        "lambda_scorer:score",
        "--out",
        str(out),
    ]


def test_sweep_scalars_pair_each_lambda_with_its_score(checkpoints, tmp_path, monkeypatch):
    (tmp_path / "lambda_scorer.py").write_text(SCORER)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "merged"
    args = sweep_args(checkpoints, out)
    assert main([*args, "--metric", "closeness", "--logger", "tensorboard", "--quiet"]) == 0
    rows = read_csv(out / "sweep.csv")
    scalars = {
        tag: dict(points)
        for tag, points in tensorboard_scalars(out / "logs" / "tensorboard").items()
    }
    assert set(scalars) == {"lambda", "closeness"}
    assert sorted(scalars["lambda"]) == list(range(len(rows)))
    pairs = [(scalars["lambda"][step], scalars["closeness"][step]) for step in range(len(rows))]
    assert pairs == [
        (pytest.approx(float(r["lambda"])), pytest.approx(float(r["closeness"]))) for r in rows
    ]
    assert len(rows) == 3 and not list(tmp_path.glob(".merged.*"))


def test_asking_for_wandb_without_it_says_how_to_install_it(
    checkpoints, recipe_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(LoggerError, match=r"pip install 'culturemert\[wandb\]'"):
        require_loggers(["wandb"])
    runs = [
        ([*sweep_args(checkpoints, tmp_path / "merged"), "--quiet"], 2),
        (["pretrain", str(recipe_file), "--out", str(tmp_path / "run")], 1),
        (
            [
                "evaluate",
                "features:chroma",
                "--tasks",
                "generic",
                "--out",
                str(tmp_path / "e.json"),
            ],
            2,
        ),
    ]
    for args, code in runs:
        assert main([*args, "--logger", "tensorboard,wandb"]) == code
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0, error
        assert "the wandb logger needs wandb" in error
        assert "pip install 'culturemert[wandb]'" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing started


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file: LevelDB-log framing (a 7-byte file header,
    then records with 4-byte crc, 2-byte length, 1-byte type in 32 KiB blocks) of W&B records."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, position, pending, rows = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        length, kind = (
            int.from_bytes(data[position + 4 : position + 6], "little"),
            data[position + 6],
        )
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                )
    return rows


def test_wandb_offline_run_is_written_under_out(checkpoints, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "lambda_scorer.py").write_text(SCORER)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "merged"
    assert main([*sweep_args(checkpoints, out), "--logger", "wandb", "--quiet"]) == 0
    rows = read_csv(out / "sweep.csv")
    (run,) = (out / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = wandb_history(run)
    assert [(h["lambda"], h["score"]) for h in history] == [
        (pytest.approx(float(r["lambda"])), pytest.approx(float(r["score"]))) for r in rows
    ]
