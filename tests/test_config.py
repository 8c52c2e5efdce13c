"""The one config layer: YAML and ``--set`` overrides into typed dataclasses, with errors that
name the file and the field."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from culturemert.config import ConfigError, apply_override, config_from_dict, load_config, to_dict


@dataclass
class Probe:
    hidden: int = 0
    rate: float = 0.5

    def __post_init__(self):
        if not 0 <= self.rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {self.rate}")


@dataclass
class Stage:
    name: str
    steps: int
    trainable: tuple[str, ...] = ("encoder",)


@dataclass
class Job:
    stages: list[Stage]
    probe: Probe = field(default_factory=Probe)
    window: float | None = 30.0
    size: tuple[int, int] = (1, 2)
    tags: dict[str, int] = field(default_factory=dict)
    quiet: bool = False


RAW = {"stages": [{"name": "heads", "steps": 10}, {"name": "full", "steps": 20}]}


def test_values_take_their_fields_types():
    job = config_from_dict(
        Job,
        {**RAW, "probe": {"hidden": 64, "rate": "5e-1"}, "size": [3, 4], "tags": {"a": 1}},
    )
    assert job.stages[1] == Stage("full", 20, ("encoder",))
    assert job.probe == Probe(64, 0.5) and isinstance(job.probe.rate, float)
    assert job.size == (3, 4) and job.tags == {"a": 1} and job.window == 30.0


def test_overrides_reach_list_items_by_index_or_name_and_parse_yaml():
    overrides = [
        "stages.0.steps=11",
        "stages.full.trainable=[encoder, heads]",
        "probe.hidden=128",
        "window=null",
        "quiet=true",
    ]
    job = config_from_dict(Job, RAW, overrides)
    assert [s.steps for s in job.stages] == [11, 20]
    assert job.stages[1].trainable == ("encoder", "heads")
    assert job.probe.hidden == 128 and job.window is None and job.quiet is True
    assert RAW["stages"][0]["steps"] == 10  # the caller's mapping is left as it was


def test_to_dict_round_trips():
    job = config_from_dict(Job, RAW, ["probe.rate=0.25"])
    assert config_from_dict(Job, to_dict(job)) == job
    assert to_dict(job)["stages"][0] == {"name": "heads", "steps": 10, "trainable": ["encoder"]}


@pytest.mark.parametrize(
    ("raw", "overrides", "message"),
    [
        (RAW, ["stages.0.steps=ten"], "stages.0.steps: expected an integer, got 'ten'"),
        (RAW, ["stages.0.steps=true"], "stages.0.steps: expected an integer"),
        (RAW, ["stages.middle.steps=1"], "stages.middle: no list item named 'middle'"),
        (RAW, ["stages.5.steps=1"], "stages.5: index out of range (the list has 2 items)"),
        (RAW, ["probe.depth=3"], "probe.depth: unknown field (expected one of hidden, rate)"),
        (RAW, ["probe.rate=1.5"], "probe: rate must be in [0, 1), got 1.5"),
        (RAW, ["size=[1]"], "size: expected a list of 2 values"),
        (RAW, ["window=wide"], "window: expected a number, got 'wide'"),
        (RAW, ["quiet=1"], "quiet: expected true or false"),
        (RAW, ["steps"], "expected KEY=VALUE"),
        ({"stages": [{"name": "x"}]}, [], "stages.0.steps: required field is missing"),
        ({}, [], "stages: required field is missing"),
    ],
)
def test_bad_values_name_the_place_and_what_was_expected(raw, overrides, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(Job, raw, overrides, where="job.yaml")
    assert str(caught.value).startswith("job.yaml: ")
    assert message in str(caught.value)


def test_files_are_named_in_errors(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("stages:\n  - {name: heads, steps: 3}\nprobe: {hidden: x}\n")
    with pytest.raises(ConfigError, match=f"{path}: probe.hidden: expected an integer"):
        load_config(Job, path)
    assert load_config(Job, path, ["probe.hidden=4"]).probe.hidden == 4
    path.write_text("stages: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, path)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(Job, tmp_path / "absent.yaml")


def test_overrides_make_missing_mappings():
    raw: dict = {}
    apply_override(raw, "engine.strategy=ddp")
    assert raw == {"engine": {"strategy": "ddp"}}
    with pytest.raises(ConfigError, match="engine.strategy.kind is not inside a mapping"):
        apply_override(raw, "engine.strategy.kind.x=1")
