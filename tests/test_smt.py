"""SMT pretraining: learning, no unrolling, checkpoints, and clear errors on bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil

import pytest
import torch

from agents.cli import main
from agents.config import TrainConfig
from agents.pipeline import collect, pretrain
from agents.probes import TMazeProbe
from smt_rl.checkpoint import CheckpointError
from smt_rl.config import load_config
from smt_rl.data import TrajectoryDataset
from smt_rl.errors import ConfigError, DatasetError
from smt_rl.smt.losses import bptt_loss, smt_loss
from smt_rl.smt.model import SMTModel, load_smt_model

TMAZE = "smt_rl/PassiveTMaze-v0"


class _Exploit:
    """Unpickling this would create a file: the proof that a loader executed code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def tmaze50(tmp_path_factory):
    """Random-policy PassiveTMaze episodes, corridor length 50 (52 steps each)."""
    path = tmp_path_factory.mktemp("data") / "tmaze50"
    collect(TMAZE, episodes=800, out=path, num_envs=8, env_kwargs={"length": 50}, progress=False)
    return path


def _overrides(data, out, **extra):
    items = {
        "env.kwargs.length": 50,
        "data.path": str(data),
        "out": str(out),
        "smt.updates": 300,
        "offline_dmt.updates": 100,
        "smt.eval_every": 1000,
        "data.val_max_episodes": 128,
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


def test_memory_module_alone_recalls_the_cue_after_smt(tmp_path, tmaze50):
    """The acceptance test: length 50, random-policy data, CPU, well under a few minutes."""
    summary = pretrain("configs/tmaze.yaml", _overrides(tmaze50, tmp_path / "run"), progress=False)
    # the memory module, rolled out alone from its initial state on held-out episodes:
    assert summary["probe/cue_accuracy"] >= 0.95
    # ... and the decoder reads the right junction reward sign from it, for both actions
    assert summary["probe/junction_reward_sign"] >= 0.95
    assert summary["rollout/memory_mse"] < 0.05  # close to the teacher (RMS-normalised tokens)
    assert summary["loss/pred"] < 0.2 and summary["loss/dyn"] < 0.05
    # an untrained model of the same shape does not pass the reward-sign probe (negative control)
    ds = TrajectoryDataset(tmaze50)
    cfg = load_config(TrainConfig, "configs/tmaze.yaml")
    untrained = SMTModel(cfg.model, ds.observation_space, ds.action_space)
    ids = torch.arange(128)
    batch = ds.windows(ids, torch.zeros_like(ids), 52)
    assert TMazeProbe()(untrained, batch)["probe/junction_reward_sign"] < 0.8
    # the run folder holds what later tools read
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoint/checkpoint.json",
        "checkpoint/model.safetensors",
        "rollout_memory_mse_by_step.json",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/pred", "loss/dyn", "loss/unif"} <= set(lines[0])
    assert any("rollout/memory_mse" in x for x in lines)
    # the checkpoint reloads into an identical model (no pickle: safetensors + JSON)
    reloaded = load_smt_model(run / "checkpoint")
    assert TMazeProbe()(reloaded, batch)["probe/junction_reward_sign"] >= 0.95


def _graph_depth(tensor: torch.Tensor) -> int:
    """Longest chain of autograd nodes from ``tensor`` down to the leaves (iterative DFS)."""
    depth: dict = {}
    stack = [(tensor.grad_fn, False)]
    while stack:
        fn, expanded = stack.pop()
        if fn is None or fn in depth:
            continue
        children = [c for c, _ in fn.next_functions if c is not None]
        if expanded:
            depth[fn] = 1 + max((depth[c] for c in children), default=0)
        else:
            stack.append((fn, True))
            stack.extend((c, False) for c in children if c not in depth)
    return depth[tensor.grad_fn]


def test_smt_gradient_path_does_not_grow_with_sequence_length(tmaze50):
    ds = TrajectoryDataset(tmaze50)
    cfg = load_config(TrainConfig, "configs/tmaze.yaml")
    model = SMTModel(cfg.model, ds.observation_space, ds.action_space)
    calls = []
    original_step = model.cell.step
    model.cell.step = lambda m, x: calls.append(m.shape[0]) or original_step(m, x)
    depths = {}
    for length in (8, 48):
        ids = torch.arange(4)
        batch = ds.windows(ids, torch.zeros_like(ids), length)
        calls.clear()
        loss, _ = smt_loss(model, batch, cfg.smt)
        assert calls == [4 * length]  # ONE application of f, batched over every position
        smt_depth = _graph_depth(loss)
        calls.clear()
        bptt, _ = bptt_loss(model, batch, cfg.smt)
        assert len(calls) == length  # the baseline chains f through time
        depths[length] = (smt_depth, _graph_depth(bptt))
    assert depths[8][0] == depths[48][0]  # SMT: same longest gradient path at any length
    assert depths[48][1] > depths[8][1] + 40 * 5  # BPTT: grows with T (the check can see chains)


def test_bad_inputs_fail_before_training(tmp_path, tmaze50):
    with pytest.raises(ConfigError, match=r"smt\.lrr"):
        pretrain("configs/tmaze.yaml", ["smt.lrr=0.1", f"out={tmp_path / 'a'}"], progress=False)
    assert not (tmp_path / "a").exists()  # nothing written
    with pytest.raises(ConfigError, match=r"model\.cell"):
        pretrain("configs/tmaze.yaml", ["model.cell=lstm", f"out={tmp_path / 'b'}"], progress=False)
    # an empty dataset
    empty = tmp_path / "empty"
    from envs import make_env
    from smt_rl.data import TrajectoryWriter, env_description

    env = make_env(TMAZE, {"length": 50})
    TrajectoryWriter(
        empty, env_description(TMAZE, {"length": 50}, None), env.observation_space, env.action_space
    )
    with pytest.raises(DatasetError, match="0 episode"):
        pretrain("configs/tmaze.yaml", _overrides(empty, tmp_path / "c"), progress=False)
    # episodes shorter than the model needs
    short = tmp_path / "short"
    collect(TMAZE, episodes=10, out=short, env_kwargs={"length": 0}, progress=False)
    over = _overrides(short, tmp_path / "d", **{"env.kwargs.length": 0, "model.horizon": 4})
    with pytest.raises(DatasetError, match="shorter than needed"):
        pretrain("configs/tmaze.yaml", over, progress=False)
    # a dataset of another task
    with pytest.raises(DatasetError, match=r"data\.path"):
        pretrain("configs/tmaze.yaml", _overrides(short, tmp_path / "e"), progress=False)
    # a missing dataset
    with pytest.raises(DatasetError, match="does not exist"):
        pretrain(
            "configs/tmaze.yaml", _overrides(tmp_path / "nope", tmp_path / "f"), progress=False
        )


def test_cli_pretrain_collects_when_no_dataset_and_checkpoints_are_checked(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "pretrain",
            "configs/tmaze.yaml",
            "env.kwargs.length=5",
            "data.episodes=40",
            "smt.updates=10",
            "offline_dmt.updates=5",
            "smt.eval_every=5",
            "smt.log_every=5",
            f"out={out}",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset_episodes"] == 40 and summary["env_id"] == TMAZE
    assert TrajectoryDataset(out / "data").env_kwargs == {"length": 5}
    assert load_config(TrainConfig, out / "config.yaml").smt.updates == 10
    # a truncated weights file, a pickle in its place, and a missing folder are refused
    ckpt = out / "checkpoint"
    good = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="does not match"):
        load_smt_model(ckpt)
    # a malicious pickle planted as the weights, its hash even written into checkpoint.json
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(str(marker)))
    (ckpt / "model.safetensors").write_bytes(evil)
    spec = json.loads((ckpt / "checkpoint.json").read_text())
    spec["weights_sha256"] = hashlib.sha256(evil).hexdigest()
    (ckpt / "checkpoint.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_smt_model(ckpt)
    assert not marker.exists()  # nothing was executed
    shutil.rmtree(ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_smt_model(ckpt)
    assert main(["pretrain", "--list-keys"]) == 0
    listing = capsys.readouterr().out
    assert "smt.c_dyn" in listing and "model.cell" in listing


def test_predictive_loss_weights_each_term_as_configured(tmaze50):
    """c_far, c_term and c_obs scale exactly their own terms (a task whose episodes end at a fixed
    step can switch the termination target off)."""
    from smt_rl.smt.losses import predictive_loss

    ds = TrajectoryDataset(tmaze50)
    cfg = load_config(TrainConfig, "configs/tmaze.yaml")
    model = SMTModel(cfg.model, ds.observation_space, ds.action_space)
    ids = torch.arange(4)
    batch = ds.windows(ids, torch.zeros_like(ids), 52)
    with torch.no_grad():
        memory = model.teacher(model.step_encoder(batch))
        totals = {}
        for c_term, c_far, c_obs in (
            (1.0, 1.0, 1.0),
            (0.0, 1.0, 1.0),
            (1.0, 0.0, 1.0),
            (1, 1, 0.5),
        ):
            smt = cfg.smt.model_copy(update={"c_term": c_term, "c_far": c_far, "c_obs": c_obs})
            total, terms = predictive_loss(
                model, memory, batch, smt, torch.Generator().manual_seed(0)
            )
            totals[(c_term, c_far, c_obs)] = (total, terms)
    full, terms = totals[(1.0, 1.0, 1.0)]
    assert terms["terminated"] > 0 and terms["far"] > 0 and terms["obs"] > 0
    torch.testing.assert_close(totals[(0.0, 1.0, 1.0)][0], full - terms["terminated"])
    torch.testing.assert_close(totals[(1.0, 0.0, 1.0)][0], full - terms["far"])
    torch.testing.assert_close(totals[(1, 1, 0.5)][0], full - 0.5 * terms["obs"])
