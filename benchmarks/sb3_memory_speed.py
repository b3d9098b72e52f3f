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

``--breakdown`` then times where a vector step goes inside ``learn`` (env step, wrapper step,
memory step, rollout collection, PPO update; microseconds per vector step) for ``plain``,
``batched_flat`` and ``batched_flat_eager``, and the memory step alone in a tight loop.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sb3_memory_speed.py [--timesteps 16384] [--repeats 3]
        [--num-envs 8] [--cell-hidden 256] [--ppo example|sb3_default] [--variants ...]
        [--breakdown] [--out benchmarks/results/sb3_memory_speed.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import torch
from machine import cpu_model
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import envs
from agents.pipeline import pretrain
from smt_rl.integrations import PretrainedMemory, SMTMemoryVecWrapper, SMTMemoryWrapper

# a tiny pretraining: the default model sizes, few updates (the weights do not change the speed)
ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = [
    "data.episodes=64",
    "smt.updates=10",
    "offline_dmt.updates=0",
    "smt.eval_every=1000",
    "seed=0",
    "device=cpu",
]
# the PPO settings of examples/sb3_ppo.py, read from it (a script, not a package)
_spec = importlib.util.spec_from_file_location("example_sb3_ppo", ROOT / "examples" / "sb3_ppo.py")
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
PPO_KWARGS = _example.PPO_KWARGS
# --ppo sb3_default: SB3's own PPO defaults (2048 steps per env per rollout, 10 epochs, minibatch
# 64), what `PPO(policy, venv)` runs: more update work per env step than the example's settings
PPO_SETTINGS = {"example": PPO_KWARGS, "sb3_default": {"device": "cpu"}}
VARIANTS = ("plain", "batched_dict", "batched_flat", "batched_flat_eager", "per_env_dict")


def build(
    variant: str, memory: PretrainedMemory, num_envs: int, length: int, ppo: str = "example"
) -> PPO:
    """A fresh PPO (``ppo``: a key of :data:`PPO_SETTINGS`) on the variant's vector env."""

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
    return PPO(policy, venv, seed=0, **PPO_SETTINGS[ppo])


def time_learn(make: Callable[[], PPO], warmup: int, timesteps: int) -> float:
    """Env steps/s of ``learn(timesteps)`` after ``learn(warmup)`` on the same model."""
    model = make()
    model.learn(warmup)
    started = time.perf_counter()
    model.learn(timesteps, reset_num_timesteps=False)
    steps = model.num_timesteps - warmup
    return steps / (time.perf_counter() - started)


# what --breakdown times inside learn(): (class, method, name)
TIMED = (
    (DummyVecEnv, "step_wait", "env_step"),
    (SMTMemoryVecWrapper, "step_wait", "wrapper_step"),
    (PretrainedMemory, "advance", "memory_step"),
    (OnPolicyAlgorithm, "collect_rollouts", "collect"),
    (PPO, "train", "train"),
)


@contextlib.contextmanager
def timers(totals: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in each of :data:`TIMED`'s methods to ``totals`` while inside."""
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in TIMED]
    for (cls, name, original), (_, _, key) in zip(originals, TIMED, strict=True):

        def timed(*args, _original=original, _key=key, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_key] = totals.get(_key, 0.0) + time.perf_counter() - started

        setattr(cls, name, timed)
    try:
        yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def breakdown(variant: str, memory: PretrainedMemory, args: argparse.Namespace) -> dict:
    """Microseconds per vector step spent in each of :data:`TIMED` during ``learn``, and the
    memory step alone in a tight loop (its weights and code hot in the caches)."""
    model = build(variant, memory, args.num_envs, args.length, args.ppo)
    model.learn(args.warmup)
    totals: dict[str, float] = {}
    with timers(totals):
        model.learn(args.timesteps, reset_num_timesteps=False)
    vector_steps = args.timesteps / args.num_envs
    out = {key: round(seconds / vector_steps * 1e6, 1) for key, seconds in totals.items()}
    if variant != "plain":
        state = memory.initial_state(args.num_envs)
        obs = torch.zeros(args.num_envs, *memory.observation_space.shape)
        for _ in range(100):
            memory.advance(obs, state)
        started = time.perf_counter()
        for _ in range(2000):
            memory.advance(obs, state)
        out["memory_step_hot_loop"] = round((time.perf_counter() - started) / 2000 * 1e6, 1)
    return out


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
    parser.add_argument(
        "--ppo",
        choices=list(PPO_SETTINGS),
        default="example",
        help="PPO settings: examples/sb3_ppo.py's (light updates) or SB3's defaults",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the env, wrapper, memory, rollout and train parts of plain and "
        "batched_flat(_eager) PPO (us per vector step)",
    )
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
            make = lambda v=variant: build(v, memory, args.num_envs, args.length, args.ppo)  # noqa: E731
            rates[variant].append(time_learn(make, args.warmup, args.timesteps))
    median = {v: statistics.median(r) for v, r in rates.items()}
    slowdown = {v: median["plain"] / median[v] for v in variants}
    parts = {}
    if args.breakdown:
        for variant in ("plain", "batched_flat", "batched_flat_eager"):
            parts[variant] = breakdown(variant, memory, args)
    result = {
        "task": f"{envs.TMAZE_ID} length={args.length}",
        "num_envs": args.num_envs,
        "timesteps": args.timesteps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "ppo_settings": args.ppo,
        "ppo": PPO_SETTINGS[args.ppo],
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
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
    }
    if parts:
        result["breakdown_us_per_vector_step"] = parts
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| variant | env steps/s (median) | slowdown vs plain |")
    print("|---|---:|---:|")
    for variant in variants:
        print(f"| {variant} | {median[variant]:,.0f} | {slowdown[variant]:.2f}x |")
    for variant, times in parts.items():
        print(f"{variant}: us per vector step: {times}")


if __name__ == "__main__":
    main()
