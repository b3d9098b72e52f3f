"""Env steps/s of stable-baselines3 PPO with a pretrained SMT memory: batched vs per-env wrapper.

Four ways to run SB3 PPO on the same task and vector env (``DummyVecEnv`` of ``--num-envs``
PassiveTMaze envs), on one torch thread:

- ``plain``: PPO ``MlpPolicy`` on the raw observations (no memory), the reference;
- ``batched_dict`` / ``batched_flat``: PPO on :class:`SMTMemoryVecWrapper` (one memory call per
  vector step), ``MultiInputPolicy`` on dict observations / ``MlpPolicy`` on flat ones;
- ``batched_flat_eager``: as ``batched_flat`` with ``memory.trace = False`` (every memory step
  eager: what the trace of the common step saves);
- ``per_env_dict``: PPO ``MultiInputPolicy`` on :class:`SMTMemoryWrapper` inside each env (one
  memory call per env step).

Each timing is ``model.learn(--timesteps)`` after a warm-up ``learn(--warmup)`` on a fresh model
(environments and model built before the clock starts); the median over ``--repeats`` repeats is
reported. The memory comes from a small pretraining run made here (the model sizes of
``configs/tmaze.yaml``, few updates: speed does not depend on how well it was trained). PPO uses
the settings of ``examples/sb3_ppo.py`` (128 steps per env per rollout, 4 epochs, minibatch 128).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sb3_memory_speed.py [--timesteps 16384] [--repeats 3]
        [--out benchmarks/results/sb3_memory_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import envs
from agents.pipeline import pretrain
from smt_rl.integrations import PretrainedMemory, SMTMemoryVecWrapper, SMTMemoryWrapper

# a tiny pretraining: the default model sizes, few updates (the weights do not change the speed)
PRETRAIN = [
    "data.episodes=64",
    "smt.updates=10",
    "offline_dmt.updates=0",
    "smt.eval_every=1000",
    "seed=0",
    "device=cpu",
]
PPO_KWARGS = {
    "n_steps": 128,
    "batch_size": 128,
    "n_epochs": 4,
    "learning_rate": 1e-3,
    "gamma": 0.9,
    "gae_lambda": 0.9,
    "ent_coef": 0.0,
    "device": "cpu",
}
VARIANTS = ("plain", "batched_dict", "batched_flat", "batched_flat_eager", "per_env_dict")


def build(variant: str, memory: PretrainedMemory, num_envs: int, length: int) -> PPO:
    """A fresh PPO on the variant's vector env."""

    def tmaze() -> gym.Env:
        return gym.make(envs.TMAZE_ID, length=length)

    venv: VecEnv
    if variant == "per_env_dict":
        venv = DummyVecEnv([lambda: SMTMemoryWrapper(tmaze(), memory)] * num_envs)
    else:
        venv = DummyVecEnv([tmaze] * num_envs)
    memory.trace = not variant.endswith("eager")
    if variant.startswith("batched"):
        mode = variant.removeprefix("batched_").removesuffix("_eager")
        venv = SMTMemoryVecWrapper(venv, memory, mode=mode)
    policy = "MultiInputPolicy" if "dict" in variant else "MlpPolicy"
    return PPO(policy, venv, seed=0, **PPO_KWARGS)


def time_learn(make: Callable[[], PPO], warmup: int, timesteps: int) -> float:
    """Env steps/s of ``learn(timesteps)`` after ``learn(warmup)`` on the same model."""
    model = make()
    model.learn(warmup)
    started = time.perf_counter()
    model.learn(timesteps, reset_num_timesteps=False)
    steps = model.num_timesteps - warmup
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=16_384)
    parser.add_argument("--warmup", type=int, default=2_048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--length", type=int, default=30, help="PassiveTMaze corridor length")
    parser.add_argument(
        "--cell-hidden",
        type=int,
        default=256,
        help="the memory cell's hidden width (model.cell_hidden)",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/sb3_memory_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "pretrain"
        overrides = [
            *PRETRAIN,
            f"env.kwargs.length={args.length}",
            f"model.cell_hidden={args.cell_hidden}",
            f"out={run}",
        ]
        pretrain("configs/tmaze.yaml", overrides, progress=False)
        memory = PretrainedMemory.from_checkpoint(run / "checkpoint")

    variants = ["plain", *(v for v in VARIANTS if v in args.variants and v != "plain")]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):  # interleaved, so that load from other jobs hits all alike
        for variant in variants:
            make = lambda v=variant: build(v, memory, args.num_envs, args.length)  # noqa: E731
            rates[variant].append(time_learn(make, args.warmup, args.timesteps))
    median = {v: statistics.median(r) for v, r in rates.items()}
    slowdown = {v: median["plain"] / median[v] for v in variants}
    result = {
        "task": f"{envs.TMAZE_ID} length={args.length}",
        "num_envs": args.num_envs,
        "timesteps": args.timesteps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "ppo": PPO_KWARGS,
        "memory": {
            "tokens": memory.memory_shape[0],
            "token_dim": memory.memory_shape[1],
            "cell_hidden": args.cell_hidden,
            "parameters": sum(p.numel() for p in memory.parameters()),
        },
        "rates": rates,
        "median": median,
        "slowdown_vs_plain": slowdown,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| variant | env steps/s (median) | slowdown vs plain |")
    print("|---|---:|---:|")
    for variant in variants:
        print(f"| {variant} | {median[variant]:,.0f} | {slowdown[variant]:.2f}x |")


if __name__ == "__main__":
    main()
