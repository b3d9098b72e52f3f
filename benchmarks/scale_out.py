"""Scale-out throughput: collection over worker processes, SMT pretraining over DDP ranks.

1. Collection: ``agents.collect`` (envs stepped by ``smt_rl.data.vector.make_vector_env``) with
   gymnasium's ``SyncVectorEnv`` (``sync``, in-process) against its ``AsyncVectorEnv`` with 1, 2
   and 4 worker processes (``async``), env steps written per second.
2. Pretraining: ``smt-rl pretrain`` under ``torchrun --nproc_per_node=R`` (DDP; gloo on CPU,
   NCCL on CUDA) for R = 1 and 2: SMT updates per second and sequences per second (each rank
   samples ``smt.batch_size`` sequences per update), timed between the first and last metric
   lines of the SMT phase (so start-up, data loading and evaluation are left out).

Usage::

    python benchmarks/scale_out.py [--workers 1 2 4] [--ranks 1 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from agents.pipeline import collect

ROOT = Path(__file__).resolve().parents[1]
COLLECT_CASES = [
    # (env id, kwargs, episodes)
    ("MiniGrid-MemoryS7-v0", {}, 300),
    ("smt_rl/PassiveTMaze-v0", {"length": 100}, 1000),
]
PRETRAIN = [
    "configs/tmaze.yaml",
    "env.kwargs.length=50",
    "smt.updates=120",
    "offline_dmt.updates=0",
    "smt.log_every=20",
    "smt.eval_every=1000",
    "smt.checkpoint_every=0",
]


def collection_rows(workers: list[int], seed: int) -> list[dict]:
    rows = []
    for env_id, kwargs, episodes in COLLECT_CASES:
        for mode, n in [("sync", 1), ("sync", max(workers)), *[("async", w) for w in workers]]:
            with tempfile.TemporaryDirectory() as tmp:
                result = collect(
                    env_id,
                    episodes=episodes,
                    out=Path(tmp) / "data",
                    num_envs=n,
                    seed=seed,
                    env_kwargs=kwargs,
                    vectorization=mode,
                    progress=False,
                )
            row = {
                "env_id": env_id,
                "vectorization": mode,
                "num_envs": n,
                "steps": result.steps,
                "wall_s": round(result.wall_s, 2),
                "steps_per_s": round(result.steps_per_s),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def pretrain_rows(ranks: list[int], device: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        collect(
            "smt_rl/PassiveTMaze-v0",
            episodes=1000,
            out=data,
            num_envs=8,
            env_kwargs={"length": 50},
            progress=False,
        )
        for r in ranks:
            out = Path(tmp) / f"run{r}"
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={r}", "-m", "agents", "pretrain", *PRETRAIN,
                f"data.path={data}", f"device={device}", f"out={out}", "--no-progress",
            ]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            smt = [x for x in lines if x["phase"] == "smt"]
            updates = smt[-1]["step"] - smt[0]["step"]
            seconds = smt[-1]["wall_s"] - smt[0]["wall_s"]
            batch = yaml.safe_load((out / "config.yaml").read_text())["smt"]["batch_size"]
            row = {
                "ranks": r,
                "device": device,
                "updates": updates,
                "seconds": round(seconds, 2),
                "updates_per_s": round(updates / seconds, 2),
                "sequences_per_s": round(updates * batch * r / seconds, 1),
                "final_loss_total": round(smt[-1]["loss/total"], 4),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/scale_out.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "collection": collection_rows(args.workers, args.seed),
        "pretraining": pretrain_rows(args.ranks, args.device),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
