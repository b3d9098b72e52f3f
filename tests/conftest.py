"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch

from agents.pipeline import collect, pretrain

# tiny models: one thread is faster than several, and CPU results repeat exactly
torch.set_num_threads(1)

# PassiveTMaze length 30: SMT pretraining small enough for the default run (~30 s on one CPU
# thread), whose memory module holds the cue to the junction (probe accuracy 1.0 with seed 0)
TMAZE30_PRETRAIN = [
    "env.kwargs.length=30",
    "data.episodes=500",
    "smt.updates=300",
    "offline_dmt.updates=50",
    "smt.eval_every=1000",
    "seed=0",
]


@pytest.fixture(scope="session")
def tmaze30_checkpoint(tmp_path_factory):
    """Folder of an SMT pretraining checkpoint for PassiveTMaze length 30 (seed 0)."""
    out = tmp_path_factory.mktemp("pretrain") / "tm30"
    summary = pretrain("configs/tmaze.yaml", [*TMAZE30_PRETRAIN, f"out={out}"], progress=False)
    assert summary["probe/cue_accuracy"] >= 0.95, summary
    return out / "checkpoint"


@pytest.fixture(scope="session")
def tmaze10_dataset(tmp_path_factory):
    """A dataset folder: 200 random-policy episodes of PassiveTMaze length 10 (seed 0)."""
    path = tmp_path_factory.mktemp("data") / "tm10"
    collect(
        "smt_rl/PassiveTMaze-v0",
        episodes=200,
        out=path,
        num_envs=8,
        env_kwargs={"length": 10},
        progress=False,
    )
    return path
