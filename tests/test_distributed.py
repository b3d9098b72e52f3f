"""Data-parallel SMT pretraining under torchrun: 2 CPU ranks with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from smt_rl.distributed import setup, weights_digest

ROOT = Path(__file__).resolve().parents[1]


def test_two_gloo_ranks_end_with_identical_weights_and_a_falling_loss(tmaze10_dataset, tmp_path):
    data, out = tmaze10_dataset, tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "agents", "pretrain", "configs/tmaze.yaml", "env.kwargs.length=10",
        f"data.path={data}", "smt.updates=80", "offline_dmt.updates=20", "smt.log_every=10",
        "smt.eval_every=80", "device=cpu", f"out={out}", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ddp/world_size"] == 2
    assert summary["ddp/ranks_identical"] is True  # every rank's weights hash the same
    assert done.stdout.count('"ddp/world_size"') == 1  # rank 0 alone reports
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    smt = [x["loss/total"] for x in lines if x["phase"] == "smt"]
    assert len(smt) == 8  # one writer: no line twice
    assert smt[-1] < 0.7 * smt[0], smt
    assert (out / "checkpoint/model.safetensors").is_file()


def test_a_plain_start_is_a_world_of_one():
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert ctx.broadcast("x") == "x" and ctx.gather(3) == [3]
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    assert weights_digest(a) != weights_digest(b)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert weights_digest(a) != weights_digest(b)
