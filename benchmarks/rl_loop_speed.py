"""Env steps/s of the SMT agent's PPO x DMT loop against stable-baselines3's memoryless PPO.

Both learn on the same task with the same number of environments and steps per rollout, on one
torch thread. The SMT agent runs on an untrained SMT model (speed does not depend on the weights):
the rate covers acting (memory step + heads), the environments, the PPO update, the teacher's
labels of every visited step and the DMT updates. SB3 PPO is timed twice: with the config's own
settings (``sb3_ppo``: 10 epochs) and with the SMT agent's PPO settings (4 epochs, minibatch 256),
so that the update costs the same for both.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/rl_loop_speed.py [--steps 20480] [--repeats 2]
        [--out benchmarks/results/rl_loop_speed.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import torch

from agents.baselines.sb3 import SB3PPOAgent
from agents.config import TrainConfig
from agents.smt_ppo import SMTPPO
from envs import make_env
from smt_rl.config import load_config
from smt_rl.smt.model import SMTModel

TASK = ["env.kwargs.length=100", "device=cpu"]  # PassiveTMaze, 8 envs, 128 steps per rollout


def time_learn(agent, steps: int) -> float:
    """Env steps/s of ``agent.learn(steps)`` (whole learn call, env creation included)."""
    started = time.perf_counter()
    agent.learn(steps, progress_bar=False)
    return agent.num_timesteps / (time.perf_counter() - started)


def smt_rate(cfg: TrainConfig, env_fn, steps: int) -> float:
    env = env_fn()
    model = SMTModel(cfg.model, env.observation_space, env.action_space)
    env.close()
    return time_learn(SMTPPO(model, cfg, env_fn, "cpu"), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_480)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, "configs/tmaze.yaml", TASK)
    matched = load_config(
        TrainConfig,
        "configs/tmaze.yaml",
        [*TASK, "sb3_ppo.n_epochs=4", "sb3_ppo.batch_size=256", "sb3_ppo.n_steps=128"],
    )
    env_fn = functools.partial(make_env, cfg.env.id, dict(cfg.env.kwargs), cfg.env.entry_point)
    rates: dict[str, list[float]] = {"smt_ppo": [], "sb3_ppo": [], "sb3_ppo_4_epochs": []}
    for _ in range(args.repeats):
        rates["smt_ppo"].append(smt_rate(cfg, env_fn, args.steps))
        rates["sb3_ppo"].append(time_learn(SB3PPOAgent(cfg, env_fn, "cpu"), args.steps))
        rates["sb3_ppo_4_epochs"].append(
            time_learn(SB3PPOAgent(matched, env_fn, "cpu"), args.steps)
        )
    best = {k: max(v) for k, v in rates.items()}
    result = {
        "steps": args.steps,
        "num_envs": cfg.env.num_envs,
        "rates": rates,
        "best": best,
        "smt_over_sb3": best["smt_ppo"] / best["sb3_ppo"],
        "smt_over_sb3_4_epochs": best["smt_ppo"] / best["sb3_ppo_4_epochs"],
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
