"""Collection throughput (env steps/s written to disk) against the raw environment's step rate.

The raw rate is one environment stepped in a plain Python loop with random actions and resets,
nothing stored. Collection is ``smt-rl collect`` with the random policy (the envs stepped by
gymnasium's ``SyncVectorEnv``, from ``smt_rl.data.vector.make_vector_env``), from environment
creation to the last chunk on disk. The cost ratio is (collect seconds per step) / (raw seconds
per step), against both raw figures; the goal is <= 1.5.

Usage::

    python benchmarks/collect_throughput.py [--out benchmarks/results/collect_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agents.pipeline import collect
from envs import make_env

CASES = [
    # (env id, kwargs, episodes for the collection run, raw steps)
    ("smt_rl/PassiveTMaze-v0", {"length": 100}, 2000, 204_000),
    ("MiniGrid-MemoryS7-v0", {}, 600, 60_000),
]


def raw_steps_per_s(env_id: str, kwargs: dict, steps: int, seed: int = 0) -> dict[str, float]:
    """Steps/s of one environment in a bare loop: action, step, reset at episode end.

    Two figures: ``sample`` draws each action with ``env.action_space.sample()`` (a user's plain
    loop); ``env_only`` takes actions drawn beforehand, so it times the environment alone.
    """
    env = make_env(env_id, kwargs)
    env.action_space.seed(seed)
    rates = {}
    for mode in ("sample", "env_only"):
        env.reset(seed=seed)
        if mode == "env_only":
            n = int(env.action_space.n)
            drawn = np.random.default_rng(seed).integers(n, size=steps).tolist()
            next_action = iter(drawn).__next__
        else:
            next_action = env.action_space.sample
        step, reset = env.step, env.reset
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = step(next_action())
            if terminated or truncated:
                reset()
        rates[mode] = steps / (time.perf_counter() - start)
    env.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/collect_throughput.json")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for env_id, kwargs, episodes, raw_steps in CASES:
        raw = raw_steps_per_s(env_id, kwargs, raw_steps, args.seed)
        for num_envs in args.num_envs:
            with tempfile.TemporaryDirectory() as tmp:
                result = collect(
                    env_id,
                    episodes=episodes,
                    out=Path(tmp) / "data",
                    num_envs=num_envs,
                    seed=args.seed,
                    env_kwargs=kwargs,
                    progress=False,
                )
            row = {
                "env_id": env_id,
                "env_kwargs": kwargs,
                "num_envs": num_envs,
                "episodes": result.episodes,
                "steps": result.steps,
                "collect_wall_s": round(result.wall_s, 3),
                "collect_steps_per_s": round(result.steps_per_s),
                "raw_steps_per_s": round(raw["sample"]),
                "raw_env_only_steps_per_s": round(raw["env_only"]),
                "cost_ratio": round(raw["sample"] / result.steps_per_s, 3),
                "cost_ratio_env_only": round(raw["env_only"] / result.steps_per_s, 3),
            }
            rows.append(row)
            print(json.dumps(row))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    print(
        "\n| env | num_envs | steps | collect steps/s | raw steps/s (sample) | cost ratio "
        "| raw steps/s (env only) | cost ratio (env only) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['env_id']} {r['env_kwargs'] or ''} | {r['num_envs']} | {r['steps']} | "
            f"{r['collect_steps_per_s']} | {r['raw_steps_per_s']} | {r['cost_ratio']} | "
            f"{r['raw_env_only_steps_per_s']} | {r['cost_ratio_env_only']} |"
        )


if __name__ == "__main__":
    main()
