"""stable-baselines3 PPO with a pretrained SMT memory, against plain PPO, on the passive T-maze.

The memory wrapper appends a frozen SMT memory to each observation, so SB3's feed-forward
``MultiInputPolicy`` sees the cue shown at the first step when it reaches the junction; plain
``MlpPolicy`` PPO sees only the junction and stays at chance (0.5).

    python examples/sb3_ppo.py --length 30 --timesteps 4096 --seed 0

Without ``--checkpoint`` it first pretrains a small memory (about 30 s on one CPU thread at length
30) into ``runs/sb3_tmaze<length>``; longer corridors may need more pretraining
(``smt-rl pretrain configs/tmaze.yaml env.kwargs.length=...``, then ``--checkpoint``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # registers smt_rl/PassiveTMaze-v0
from agents.pipeline import pretrain
from smt_rl.integrations import SMTMemoryWrapper

# a small pretraining run: enough for the memory to hold the cue over a 30-step corridor
PRETRAIN_OVERRIDES = [
    "data.episodes=500",
    "smt.updates=300",
    "offline_dmt.updates=50",
    "smt.eval_every=1000",
    "seed=0",
]
# PPO for a short episode with a single decision at its end
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


def success_rate(model: PPO, env: gym.Env, episodes: int = 100, seed: int = 10_000) -> float:
    """Fraction of deterministic episodes that end in success (the right turn at the junction)."""
    wins = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, info = env.step(int(action))
            done = terminated or truncated
        wins += bool(info.get("success", reward > 0))
    return wins / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=30, help="corridor length of the T-maze")
    parser.add_argument("--timesteps", type=int, default=4096, help="PPO budget for each agent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, help="SMT checkpoint folder (default: pretrain)")
    args = parser.parse_args()

    checkpoint = args.checkpoint
    if checkpoint is None:
        run_dir = Path(f"runs/sb3_tmaze{args.length}")
        overrides = [f"env.kwargs.length={args.length}", f"out={run_dir}"]
        summary = pretrain("configs/tmaze.yaml", [*PRETRAIN_OVERRIDES, *overrides])
        print(f"pretrained memory: cue probe accuracy {summary.get('probe/cue_accuracy')}")
        checkpoint = run_dir / "checkpoint"

    def make_tmaze() -> gym.Env:
        return gym.make(envs.TMAZE_ID, length=args.length)

    memory_env = make_vec_env(
        make_tmaze,
        n_envs=4,
        seed=args.seed,
        wrapper_class=SMTMemoryWrapper,
        wrapper_kwargs={"memory": checkpoint},
    )
    with_memory = PPO("MultiInputPolicy", memory_env, seed=args.seed, **PPO_KWARGS)
    with_memory.learn(args.timesteps)
    plain_env = make_vec_env(make_tmaze, n_envs=4, seed=args.seed)
    plain = PPO("MlpPolicy", plain_env, seed=args.seed, **PPO_KWARGS).learn(args.timesteps)

    rate = success_rate(with_memory, SMTMemoryWrapper(make_tmaze(), checkpoint))
    print(f"PPO + SMT memory: success {rate:.2f}")
    print(f"plain PPO:        success {success_rate(plain, make_tmaze()):.2f}  (chance 0.5)")


if __name__ == "__main__":
    main()
