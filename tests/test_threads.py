"""The ``threads`` key: torch's CPU threads, set once by the smt-rl command, and given to the
runs a benchmark starts (their ``threads`` key and OMP_NUM_THREADS)."""

from __future__ import annotations

import pytest
import torch

import agents.pipeline
from agents.bench import load_suite, run_specs
from agents.bench.runner import run_env
from agents.cli import main
from agents.config import TrainConfig
from smt_rl.config import load_config
from smt_rl.device import set_threads
from smt_rl.errors import ConfigError
from smt_rl.smt.config import PretrainConfig


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_is_a_top_level_key_of_train_and_pretrain():
    assert TrainConfig().threads == PretrainConfig().threads == 1
    with pytest.raises(ConfigError, match="'threads'"):
        load_config(TrainConfig, "configs/tmaze.yaml", ["threads=-1"])


def test_set_threads(restore_threads):
    set_threads(2)
    assert torch.get_num_threads() == 2
    set_threads(0)  # torch's default: left as it is
    assert torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="threads: -1"):
        set_threads(-1)


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_the_command_sets_threads_before_the_run(command, monkeypatch, restore_threads):
    seen = {}

    def fake(cfg, *args, **kwargs):
        seen["threads"], seen["cfg"] = torch.get_num_threads(), cfg
        return {}

    monkeypatch.setattr(agents.pipeline, command, fake)
    torch.set_num_threads(1)
    assert main([command, "configs/tmaze.yaml", "threads=2", "seed=3"]) == 0
    assert seen["threads"] == 2 and seen["cfg"].threads == 2 and seen["cfg"].seed == 3
    assert main([command, "configs/tmaze.yaml", "threads=0"]) == 0
    assert seen["threads"] == 2  # 0: torch's default, untouched


def test_benchmark_runs_get_their_threads_and_omp_num_threads(monkeypatch):
    suite = load_suite("quick", ["threads=2"])
    suite.tasks[0].method_overrides = {"ppo": ["threads=3"]}
    specs = run_specs(suite, seeds=1)
    for spec in specs:
        wanted = 3 if spec.method == "ppo" else 2
        assert spec.threads == wanted and f"threads={wanted}" in spec.command
        assert spec.command.index(f"threads={wanted}") < spec.command.index(f"algo={spec.method}")
    assert {s.threads for s in run_specs(load_suite("quick"), seeds=1)} == {1}  # the default
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert run_env(2)["OMP_NUM_THREADS"] == "2" and run_env(2)["MKL_NUM_THREADS"] == "2"
    assert run_env(0)["OMP_NUM_THREADS"] == "7"  # 0: the environment's (torch's default)
