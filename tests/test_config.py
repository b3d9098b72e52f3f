"""Configs: YAML file + key=value overrides -> checked pydantic models; saved configs reload."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from agents.cli import main as cli
from agents.config import TrainConfig
from agents.pipeline import pretrain
from smt_rl.config import (
    ConfigModel,
    Count,
    Fraction,
    NonNegative,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    describe_config,
    load_config,
    save_config,
)
from smt_rl.errors import ConfigError
from smt_rl.smt.config import PretrainConfig


class EnvCfg(ConfigModel):
    id: str = Field("smt_rl/TMaze-v0", description="gymnasium id of the task")
    kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"length": 10, "noise": 0.0}, description="env args"
    )
    entry_point: str | None = Field(None, description="module:Class to register first")


class TrainCfg(ConfigModel):
    lr: NonNegative = Field(3e-4, description="Adam learning rate")
    updates: Count = Field(100, description="number of updates")
    cell: Literal["gated", "gru"] = Field("gated", description="memory cell")
    gamma: Fraction = Field(0.99, description="discount")
    clip: float | None = Field(None, description="gradient clip norm (null: none)")
    tags: list[str] = Field(default_factory=list, description="labels of the run")
    compile: bool = Field(False, description="torch.compile")


class RootCfg(ConfigModel):
    env: EnvCfg = Field(default_factory=EnvCfg, description="the task")
    train: TrainCfg = Field(default_factory=TrainCfg, description="optimisation")
    seed: int = Field(0, description="random seed")
    out: str = Field("runs/default", description="run folder")
    device: str = Field("auto", description="cpu, cuda or auto")
    data: str | None = Field(None, description="trajectory folder")


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
    assert cfg.train.updates == 100 and cfg.env.kwargs == {"length": 10, "noise": 0.0}
    assert config_from_dict(RootCfg, {}) == RootCfg()


def test_yaml_file(tmp_path):
    path = write(
        tmp_path,
        "env:\n  id: MiniGrid-Memory-S7-v0\n  kwargs: {size: 7}\n"
        "train:\n  lr: 1e-3\n  cell: gru\n  tags: [a, b]\n  clip: null\n"
        "seed: 3\n",
    )
    cfg = load_config(RootCfg, str(path))
    assert cfg.env == EnvCfg(id="MiniGrid-Memory-S7-v0", kwargs={"size": 7})
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)  # 1e-3 is a float
    assert cfg.train.cell == "gru" and cfg.train.tags == ["a", "b"] and cfg.train.clip is None
    assert cfg.train.updates == 100  # a partial section keeps its other keys
    assert cfg.seed == 3 and cfg.out == "runs/default"
    assert load_config(RootCfg, write(tmp_path, "")) == RootCfg()  # empty file: defaults


def test_int_to_float_and_whole_float_to_int():
    cfg = config_from_dict(RootCfg, {"train": {"lr": 1, "updates": 1e6, "clip": 2}})
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.train.updates == 1_000_000 and type(cfg.train.updates) is int
    assert type(cfg.train.clip) is float
    assert load_config(RootCfg, None, ["seed=1e3"]).seed == 1000


def test_free_form_dict_taken_as_is():
    kwargs = {"nested": {"a": [1, 2]}, "any": None, "n": 1.5}
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
            "train.tags=[x, y]",
            "train.clip=0.5",
            "train.compile=true",
            "env.kwargs.noise=0.1",  # sets one key of the dict the file gave
            "env.entry_point=pkg.mod:Env",
            "out=runs/x",
            "env.id=123",  # str field keeps the raw text
            "device=on",  # YAML would read this as a boolean
            "data=null",
        ],
    )
    assert cfg.seed == 5 and cfg.train.lr == 0.01 and cfg.train.updates == 12
    assert cfg.train.cell == "gru" and cfg.train.tags == ["x", "y"] and cfg.train.clip == 0.5
    assert cfg.train.compile is True
    assert cfg.env.kwargs == {"length": 20, "noise": 0.1}
    assert cfg.env.entry_point == "pkg.mod:Env" and cfg.env.id == "123"
    assert cfg.out == "runs/x" and cfg.device == "on" and cfg.data is None


def test_overrides_into_dicts_and_sections():
    # A key inside a dict the file does not set starts from the default dict.
    assert load_config(RootCfg, None, ["env.kwargs.length=50"]).env.kwargs == {
        "length": 50,
        "noise": 0.0,
    }
    # Setting the whole dict replaces it; setting a section merges into it.
    cfg = load_config(RootCfg, None, ["env.kwargs={length: 50}", "train={lr: 0.5}"])
    assert cfg.env.kwargs == {"length": 50}
    assert cfg.train == TrainCfg(lr=0.5)
    # Later overrides win; null works for optional fields and inside dicts.
    cfg = load_config(RootCfg, None, ["train.clip=1", "train.clip=null", "env.kwargs.noise=null"])
    assert cfg.train.clip is None and cfg.env.kwargs["noise"] is None
    assert load_config(RootCfg, None, ["env.entry_point=null"]).env.entry_point is None
    assert load_config(RootCfg, None, ["env.id=null", "out="]).env.id == "null"  # str: raw text


def test_apply_overrides_without_schema():
    data = {"a": {"b": 1}}
    out = apply_overrides(data, ["a.c=[1, 2]", "x.y=null", "s=hello"])
    assert out == {"a": {"b": 1, "c": [1, 2]}, "x": {"y": None}, "s": "hello"}
    assert data == {"a": {"b": 1}}  # not modified


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed", "no '='"),
        ("=3", "empty key part"),
        ("train..lr=1", "empty key part"),
        ("train.lrr=1", "Did you mean 'train.lr'?"),
        ("sed=1", "Did you mean 'seed'?"),
        ("seed.x=1", "'seed' holds int 0, not keys"),
        ("train.tags=[1, 2", "invalid YAML"),
    ],
)
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_config(RootCfg, None, [override])
    assert expected in message(excinfo) and override.split("=")[0] in message(excinfo)


def test_overrides_must_be_a_list():
    with pytest.raises(ConfigError, match="list of 'key=value' strings"):
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


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"seed": True}, "seed", "expected int, got bool True"),
        ({"seed": "3"}, "seed", "without quotes"),
        ({"train": {"lr": "0.1"}}, "train.lr", "without quotes"),
        ({"seed": 1.5}, "seed", "whole number"),
        ({"train": {"lr": True}}, "train.lr", "expected float, got bool True"),
        ({"train": {"lr": "fast"}}, "train.lr", "expected float, got str 'fast'"),
        ({"train": {"cell": "gruu"}}, "train.cell", "use one of 'gated', 'gru' (did you mean"),
        ({"train": {"tags": "x"}}, "train.tags", "expected list[str]"),
        ({"train": {"tags": ["x", 1]}}, "train.tags[1]", "expected str"),
        ({"train": {"clip": "x"}}, "train.clip", "expected float | None"),
        ({"train": {"compile": 1}}, "train.compile", "use true or false"),
        ({"env": {"id": 3}}, "env.id", "quote it"),
        ({"env": {"kwargs": [1]}}, "env.kwargs", "expected dict[str, Any]"),
        ({"env": None}, "env", "a mapping of EnvCfg keys, got null"),
        ({"device": None}, "device", "expected str, got null"),
    ],
)
def test_wrong_types_name_the_key(data, key, expected):
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(RootCfg, data)
    assert f"config key '{key}'" in message(excinfo)
    assert expected in message(excinfo)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"train": {"updates": 0}}, "'train.updates' must be >= 1, got 0"),
        ({"train": {"lr": -1}}, "'train.lr' must be >= 0"),
        ({"train": {"gamma": 1.5}}, "'train.gamma' must be between 0 and 1"),
    ],
)
def test_bounds_name_the_key(data, expected):
    with pytest.raises(ConfigError, match=expected):
        config_from_dict(RootCfg, data)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_floats_are_refused(value, tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.lr'.*finite"):
        load_config(RootCfg, None, [f"train.lr={value}"])
    with pytest.raises(ConfigError, match=r"'train\.clip'.*finite"):
        load_config(RootCfg, write(tmp_path, f"train:\n  clip: {value}\n"))
    with pytest.raises(ConfigError, match=r"'smt\.lr'.*finite"):
        load_config(TrainConfig, None, [f"smt.lr={value}"])


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(RootCfg, {"seed": "x", "train": {"updates": 0, "lr": -1, "gamma": 2}})
    lines = message(excinfo).splitlines()
    assert len(lines) == 4 and lines[3] == "(1 more not shown)"
    assert all(line.startswith("config key 'train.") for line in lines[:3])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(RootCfg, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 4, column 7") as excinfo:
        load_config(RootCfg, write(tmp_path, "seed: 1\ntrain:\n  lr: [1, 2\n  cell: gru\n"))
    assert "cfg.yaml" in message(excinfo) and "flow sequence" in message(excinfo)
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        load_config(RootCfg, write(tmp_path, "seed: 1\n  out: x\n"))
    with pytest.raises(ConfigError, match=r"line 2.*'seed' twice"):
        load_config(RootCfg, write(tmp_path, "seed: 1\nseed: 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping of keys"):
        load_config(RootCfg, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"'train\.updates': expected int, got str"):
        load_config(RootCfg, write(tmp_path, "train:\n  updates: '5'\n"))


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError) as excinfo:
        config_from_dict(RootCfg, {"seed": "x"})
    assert type(excinfo.value) is ConfigError


def test_assignment_is_checked():
    cfg = RootCfg()
    cfg.train.lr = 1  # an int is a float
    assert type(cfg.train.lr) is float
    with pytest.raises(ConfigError, match="must be >= 1"):
        cfg.train.updates = 0


# ------------------------------------------------------------------------------ renamed keys


@pytest.mark.parametrize(
    "override, expected",
    [
        ("smt.dmt_updates=5", "smt.dmt_updates was renamed offline_dmt.updates"),
        ("smt.dmt_lr=1e-3", "smt.dmt_lr was renamed offline_dmt.lr"),
        ("dmt.teacher=continued", "dmt.teacher: continued is now online_smt.enabled: true"),
        ("dmt.teacher_lr=1e-3", "dmt.teacher_lr was renamed online_smt.lr"),
        ("online_teacher.enabled=true", "online_teacher.enabled was renamed online_smt.enabled"),
        ("online_teacher.updates_per_rollout=4", "is gone; use online_smt.updates_per_step"),
        ("dmt.enabled=false", "dmt.enabled was renamed onpolicy_dmt.enabled"),
        ("dmt={anchor_coef: 0}", "dmt.anchor_coef was renamed onpolicy_dmt.anchor_coef"),
        ("dmt={}", "dmt was renamed onpolicy_dmt"),
    ],
)
def test_renamed_keys_give_the_new_name(override, expected, tmp_path):
    with pytest.raises(ConfigError, match=expected):
        load_config(TrainConfig, None, [override])
    key, value = override.split("=")
    *sections, last = key.split(".")
    text = "".join(f"{'  ' * i}{s}:\n" for i, s in enumerate(sections))
    with pytest.raises(ConfigError, match=expected):  # the same key in a file
        load_config(TrainConfig, write(tmp_path, f"{text}{'  ' * len(sections)}{last}: {value}\n"))


def test_stored_configs_with_renamed_keys_migrate():
    old = config_to_dict(TrainConfig())
    for section in ("offline_dmt", "onpolicy_dmt", "online_smt"):
        del old[section]
    old["smt"].update(dmt_updates=7, dmt_lr=0.5, dmt_revert_if_worse=False)
    old["dmt"] = {
        "enabled": False,
        "lr": 0.25,
        "teacher": "continued",
        "teacher_lr": 0.125,
        "teacher_updates_per_rollout": 8,  # a key that is gone: dropped
    }
    cfg = config_from_dict(TrainConfig, old, migrate=True)
    offline = cfg.offline_dmt.model_dump()
    assert {k: offline[k] for k in ("updates", "lr", "revert_if_worse")} == {
        "updates": 7,
        "lr": 0.5,
        "revert_if_worse": False,
    }
    assert not cfg.onpolicy_dmt.enabled and cfg.onpolicy_dmt.lr == 0.25
    assert cfg.online_smt.enabled and cfg.online_smt.lr == 0.125
    assert cfg.online_smt.updates_per_step == TrainConfig().online_smt.updates_per_step
    old["dmt"]["teacher"] = "frozen"
    assert not config_from_dict(TrainConfig, old, migrate=True).online_smt.enabled
    # the section of this session's earlier versions
    older = config_to_dict(TrainConfig())
    older["online_teacher"] = older.pop("online_smt")
    older["online_teacher"] = {"enabled": True, "lr": 0.5, "updates_per_rollout": 4}
    assert config_from_dict(TrainConfig, older, migrate=True).online_smt.lr == 0.5
    with pytest.raises(ConfigError, match=r"renamed|is gone"):
        config_from_dict(TrainConfig, old)  # typed by a user: refused


# ------------------------------------------------------------------------------ save / describe


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        RootCfg,
        None,
        [
            "env.kwargs={length: 5, names: [a, b], deep: {x: 1.5}}",
            "env.entry_point=a.b:C",
            "train.lr=1e-10",
            "train.clip=0.25",
            "train.tags=[a, 'yes', '1e-3', 'null']",
            "data=runs/data",
            "env.id=1e-3",  # a string that YAML would read as a float must be quoted in the file
            "out=null",  # and one that would read as null
            "device=",
        ],
    )
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(RootCfg, path) == cfg
    text = path.read_text()
    assert text.startswith("env:\n  id: ")  # field order, not sorted
    assert list(config_to_dict(cfg)) == ["env", "train", "seed", "out", "device", "data"]
    assert config_to_dict(cfg)["train"]["tags"] == ["a", "yes", "1e-3", "null"]
    save_config(RootCfg(), path)  # overwrite in place
    assert load_config(RootCfg, path) == RootCfg()
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left
    train = load_config(TrainConfig, "configs/tmaze.yaml", ["env.kwargs.length=7"])
    save_config(train, path)
    assert load_config(TrainConfig, path) == train


def test_describe_config():
    lines = describe_config(RootCfg).splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys[:5] == ["env", "env.id", "env.kwargs", "env.entry_point", "train"]
    assert "train.tags" in keys and "seed" in keys and "data" in keys
    line = dict(zip(keys, lines, strict=True))
    assert "float" in line["train.lr"] and "0.0003" in line["train.lr"]
    assert "# Adam learning rate" in line["train.lr"]
    assert "'gated' | 'gru'" in line["train.cell"]
    assert "# the task" in line["env"] and "# env args" in line["env.kwargs"]
    assert "{length: 10, noise: 0.0}" in line["env.kwargs"]
    assert "null" in line["env.entry_point"] and "float | None" in line["train.clip"]


def _listed_keys(command: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli([command, "--list-keys"]) == 0
    return [line.split()[0] for line in out.getvalue().splitlines() if not line.startswith("#")]


def _all_keys(cls: type[ConfigModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, ConfigModel):
            keys += _all_keys(field.annotation, f"{prefix}{name}.")
    return keys


def test_list_keys_of_train_and_pretrain():
    train_keys = _listed_keys("train")
    assert train_keys == _all_keys(TrainConfig)
    assert {"onpolicy_dmt.lr", "online_smt.enabled", "offline_dmt.updates"} <= set(train_keys)
    assert "smt.dmt_updates" not in train_keys and "dmt" not in train_keys
    pretrain_keys = _listed_keys("pretrain")
    assert pretrain_keys == _all_keys(PretrainConfig)  # exactly the keys pretrain accepts
    assert "ppo.lr" not in pretrain_keys and "offline_dmt.updates" in pretrain_keys
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli(["pretrain", "--list-keys"])
    assert "smt-rl train --list-keys" in out.getvalue().splitlines()[-1]


def test_pretrain_refuses_agent_overrides_and_accepts_its_own(tmp_path):
    for override in ("ppo.lr=1", "onpolicy_dmt.enabled=false", "algo=ppo"):
        with pytest.raises(ConfigError, match=r"is a key of `smt-rl train`"):
            pretrain("configs/tmaze.yaml", [override, f"out={tmp_path}"], progress=False)
    with pytest.raises(ConfigError, match=r"dmt\.enabled was renamed onpolicy_dmt\.enabled"):
        pretrain("configs/tmaze.yaml", ["dmt.enabled=false"], progress=False)
    (tmp_path / "typo.yaml").write_text("ppo:\n  n_stepz: 3\n")  # agent sections are checked
    with pytest.raises(ConfigError, match=r"ppo\.n_stepz.*Did you mean 'ppo\.n_steps'"):
        pretrain(tmp_path / "typo.yaml", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["typo.yaml"]  # nothing written
