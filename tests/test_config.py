"""Configs: YAML file + key=value overrides -> checked dataclass tree; saved configs reload."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from smt_rl.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    describe_config,
    load_config,
    save_config,
)
from smt_rl.errors import ConfigError


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class EnvCfg:
    id: str = "smt_rl/TMaze-v0"  # gymnasium id of the task
    kwargs: dict[str, Any] = field(default_factory=lambda: {"length": 10, "noise": 0.0})  # env args
    entry_point: str | None = None  # module:Class to register first (null: already registered)


@dataclass
class TrainCfg:
    lr: float = 3e-4  # Adam learning rate
    updates: int = 100  # number of updates
    cell: Literal["gated", "gru"] = "gated"  # memory cell
    sizes: tuple[int, ...] = (64, 64)  # hidden layer sizes
    # weight of each loss term
    weights: dict[str, float] = field(default_factory=dict)
    clip: float | None = None  # gradient clip norm (null: none)
    tags: list[str] = field(default_factory=list)
    mode: Mode = Mode.FAST


@dataclass
class RootCfg:
    env: EnvCfg = field(default_factory=EnvCfg)  # the task
    train: TrainCfg = field(default_factory=lambda: TrainCfg(updates=7))  # optimisation
    seed: int = 0  # random seed
    out: str = "runs/default"  # run folder
    device: str = "auto"  # cpu, cuda or auto
    data: Path | None = None  # trajectory folder
    name: str = ""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# ------------------------------------------------------------------------------ defaults, files


def test_defaults():
    cfg = load_config(RootCfg)
    assert cfg == RootCfg()
    assert cfg.train.updates == 7  # the parent's default for the section
    assert config_from_dict(RootCfg, {}) == RootCfg()


def test_yaml_file(tmp_path):
    path = write(
        tmp_path,
        "env:\n  id: MiniGrid-Memory-S7-v0\n  kwargs: {size: 7}\n"
        "train:\n  lr: 1e-3\n  cell: gru\n  sizes: [32, 16]\n  clip: null\n"
        "seed: 3\n",
    )
    cfg = load_config(RootCfg, str(path))
    assert cfg.env == EnvCfg(id="MiniGrid-Memory-S7-v0", kwargs={"size": 7})
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)  # 1e-3 is a float
    assert cfg.train.cell == "gru" and cfg.train.sizes == (32, 16) and cfg.train.clip is None
    assert cfg.train.updates == 7  # a partial section keeps the section's default
    assert cfg.seed == 3 and cfg.out == "runs/default"
    assert load_config(RootCfg, write(tmp_path, "")) == RootCfg()  # empty file: defaults


def test_int_to_float_and_whole_float_to_int():
    cfg = config_from_dict(RootCfg, {"train": {"lr": 1, "updates": 1e6, "clip": 2}})
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.train.updates == 1_000_000 and type(cfg.train.updates) is int
    assert type(cfg.train.clip) is float


def test_enum_path_and_dict_values():
    cfg = config_from_dict(
        RootCfg, {"data": "d/x", "train": {"mode": "slow", "weights": {"smt": 1, "dmt": 0.5}}}
    )
    assert cfg.data == Path("d/x") and cfg.train.mode is Mode.SLOW
    assert cfg.train.weights == {"smt": 1.0, "dmt": 0.5}
    with pytest.raises(ConfigError, match=r"train\.weights\.dmt"):
        config_from_dict(RootCfg, {"train": {"weights": {"dmt": "high"}}})


def test_free_form_dict_taken_as_is():
    kwargs = {"nested": {"a": [1, 2]}, "any": None}
    cfg = config_from_dict(RootCfg, {"env": {"kwargs": kwargs}})
    assert cfg.env.kwargs == kwargs
    kwargs["nested"]["a"].append(3)  # the config holds its own copy
    assert cfg.env.kwargs["nested"]["a"] == [1, 2]


# ------------------------------------------------------------------------------ overrides


def test_overrides_of_every_kind(tmp_path):
    path = write(tmp_path, "seed: 1\nenv:\n  kwargs: {length: 20}\n")
    cfg = load_config(
        RootCfg,
        path,
        [
            "seed=5",
            "train.lr=1e-2",
            "train.updates=12",
            "train.cell=gru",
            "train.sizes=[8, 4]",
            "train.clip=0.5",
            "env.kwargs.noise=0.1",  # sets one key of the dict the file gave
            "env.entry_point=pkg.mod:Env",
            "out=runs/x",
            "name=123",  # str field keeps the raw text
            "device=on",  # YAML would read this as a boolean
            "data=null",
            "train.weights.smt='2'",  # a number quoted on the command line is still a number
        ],
    )
    assert cfg.train.weights == {"smt": 2.0}
    assert cfg.seed == 5 and cfg.train.lr == 0.01 and cfg.train.updates == 12
    assert cfg.train.cell == "gru" and cfg.train.sizes == (8, 4) and cfg.train.clip == 0.5
    assert cfg.env.kwargs == {"length": 20, "noise": 0.1}
    assert cfg.env.entry_point == "pkg.mod:Env"
    assert cfg.out == "runs/x" and cfg.name == "123" and cfg.device == "on" and cfg.data is None


def test_overrides_into_dicts_and_sections():
    # A key inside a dict the file does not set starts from the default dict.
    assert load_config(RootCfg, None, ["env.kwargs.length=50"]).env.kwargs == {
        "length": 50,
        "noise": 0.0,
    }
    # Setting the whole dict replaces it; setting a section merges into it.
    cfg = load_config(RootCfg, None, ["env.kwargs={length: 50}", "train={lr: 0.5}"])
    assert cfg.env.kwargs == {"length": 50}
    assert cfg.train == TrainCfg(lr=0.5, updates=7)
    # Later overrides win; null works for optional fields and inside dicts.
    cfg = load_config(RootCfg, None, ["train.clip=1", "train.clip=null", "env.kwargs.noise=null"])
    assert cfg.train.clip is None and cfg.env.kwargs["noise"] is None
    assert load_config(RootCfg, None, ["env.entry_point=null"]).env.entry_point is None
    assert load_config(RootCfg, None, ["name=null", "out="]).name == "null"  # plain str: raw text


def test_apply_overrides_without_schema():
    data = {"a": {"b": 1}}
    out = apply_overrides(data, ["a.c=[1, 2]", "x.y=null", "s=hello"])
    assert out == {"a": {"b": 1, "c": [1, 2]}, "x": {"y": None}, "s": "hello"}
    assert data == {"a": {"b": 1}}  # not modified


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed", "has no '='"),
        ("=3", "empty"),
        ("train..lr=1", "empty"),
        ("train.lrr=1", "Did you mean 'train.lr'?"),
        ("sed=1", "Did you mean 'seed'?"),
        ("seed.x=1", "'seed' is of type int, which has no sub-keys"),
        ("train.sizes=[1, 2", "not valid YAML"),
    ],
)
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_config(RootCfg, None, [override])
    assert expected in message(excinfo) and override.split("=")[0] in message(excinfo)


def test_overrides_must_be_a_list():
    with pytest.raises(ConfigError, match="not one string"):
        load_config(RootCfg, None, "seed=1")


# ------------------------------------------------------------------------------ errors


def test_unknown_keys_name_the_key_and_suggest():
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(RootCfg, {"seeed": 1})
    text = message(excinfo)
    assert "'seeed'" in text and "Did you mean 'seed'?" in text
    assert "Valid keys at the top level: env, train, seed, out" in text

    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(RootCfg, {"train": {"lr_warmup": 3}})
    text = message(excinfo)
    assert "'train.lr_warmup'" in text and "Valid keys under 'train': lr, updates" in text

    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(RootCfg, {"cell": "gru"})  # right key, wrong level
    assert "Did you mean 'train.cell'?" in message(excinfo)


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"seed": True}, "seed", "expected int, got bool True"),
        ({"seed": "3"}, "seed", "without quotes"),
        ({"seed": 1.5}, "seed", "whole number"),
        ({"train": {"lr": "fast"}}, "train.lr", "expected float, got str 'fast'"),
        ({"train": {"cell": "lstm"}}, "train.cell", "use one of 'gated', 'gru'"),
        ({"train": {"sizes": [8, "x"]}}, "train.sizes[1]", "expected int"),
        ({"train": {"sizes": 8}}, "train.sizes", "expected tuple[int, ...]"),
        ({"train": {"clip": "x"}}, "train.clip", "expected float | None"),
        ({"train": {"mode": "medium"}}, "train.mode", "one of 'fast', 'slow'"),
        ({"env": {"id": 3}}, "env.id", "quote it"),
        ({"env": {"kwargs": [1]}}, "env.kwargs", "expected dict[str, Any]"),
        ({"env": None}, "env", "a mapping of EnvCfg keys, got null"),
        ({"device": None}, "device", "null is not allowed"),
    ],
)
def test_wrong_types_name_the_key(data, key, expected):
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(RootCfg, data)
    assert f"config key '{key}'" in message(excinfo)
    assert expected in message(excinfo)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(RootCfg, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 4, column 7") as excinfo:
        load_config(RootCfg, write(tmp_path, "seed: 1\ntrain:\n  lr: [1, 2\n  cell: gru\n"))
    assert "cfg.yaml" in message(excinfo) and "flow sequence that starts at line 3" in message(
        excinfo
    )
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        load_config(RootCfg, write(tmp_path, "seed: 1\n  out: x\n"))
    with pytest.raises(ConfigError, match=r"line 2.*'seed' twice"):
        load_config(RootCfg, write(tmp_path, "seed: 1\nseed: 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping of keys at the top level"):
        load_config(RootCfg, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"'train\.updates': expected int, got str"):
        load_config(RootCfg, write(tmp_path, "train:\n  updates: '5'\n"))


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError) as excinfo:
        config_from_dict(RootCfg, {"seed": "x"})
    assert type(excinfo.value) is ConfigError


# ------------------------------------------------------------------------------ save / describe


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        RootCfg,
        None,
        [
            "env.kwargs={length: 5, names: [a, b], deep: {x: 1.5}}",
            "env.entry_point=a.b:C",
            "train.lr=1e-10",
            "train.sizes=[]",
            "train.clip=0.25",
            "train.tags=[a, 'yes', '1e-3']",
            "train.weights={smt: 1}",
            "train.mode=slow",
            "data=runs/data",
            "name=1e-3",  # a string that YAML would read as a float must be quoted in the file
            "out=null",  # and one that would read as null
            "device=",
        ],
    )
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(RootCfg, path) == cfg
    text = path.read_text()
    assert text.startswith("env:\n  id: ")  # field order, not sorted
    assert list(config_to_dict(cfg)) == ["env", "train", "seed", "out", "device", "data", "name"]
    plain = config_to_dict(cfg)
    assert plain["train"]["sizes"] == [] and plain["data"] == "runs/data"
    assert plain["train"]["mode"] == "slow"
    save_config(RootCfg(), path)  # overwrite in place
    assert load_config(RootCfg, path) == RootCfg()
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left


def test_describe_config():
    text = describe_config(RootCfg)
    lines = text.splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys[:5] == ["env", "env.id", "env.kwargs", "env.entry_point", "train"]
    assert "train.tags" in keys and "seed" in keys and "name" in keys
    line = {k: v for k, v in zip(keys, lines, strict=True)}
    assert "float" in line["train.lr"] and "0.0003" in line["train.lr"]
    assert "# Adam learning rate" in line["train.lr"]
    assert "7" in line["train.updates"]  # default as the parent builds the section
    assert "'gated' | 'gru'" in line["train.cell"]
    assert "# weight of each loss term" in line["train.weights"]  # comment on the line above
    assert "# the task" in line["env"] and "# env args" in line["env.kwargs"]
    assert "{length: 10, noise: 0.0}" in line["env.kwargs"]
    assert "null" in line["env.entry_point"]
    assert "#" not in line["train.tags"]  # no comment, no crash


def test_describe_without_source():
    cls = type("Anon", (), {"__annotations__": {"x": "int"}, "x": 1})
    anon = dataclass(cls)
    assert describe_config(anon).split() == ["x", "int", "1"]
