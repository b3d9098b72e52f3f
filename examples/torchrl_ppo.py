"""torchrl PPO whose policy reads a pretrained SMT memory: PassiveTMaze, length 50.

    python examples/torchrl_ppo.py                       # pretrains the memory first (~1 min)
    python examples/torchrl_ppo.py --checkpoint RUN/pretrain/checkpoint

Plain torchrl: Collector, GAE, ClipPPOLoss. The only SMT pieces are the memory module (frozen,
loaded from a checkpoint) and its env transforms. Because the memory is frozen, PPO trains only
the two small heads on shuffled single steps: no recurrent loss, no sequence minibatches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torch.distributions import Categorical
from torchrl.collectors import Collector
from torchrl.envs import Compose, GymEnv, RewardSum, SerialEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

import envs  # noqa: F401  (registers smt_rl/PassiveTMaze-v0)
from smt_rl.integrations.torchrl import SMTMemoryModule

TMAZE = "smt_rl/PassiveTMaze-v0"


def make_env(memory: SMTMemoryModule, length: int, num_envs: int, seed: int) -> TransformedEnv:
    """``num_envs`` PassiveTMazes with what the memory reads (is_init, step count, previous
    action and reward, the memory state) and the episode return (``episode_reward``)."""

    def one_env():
        return GymEnv(TMAZE, length=length, categorical_action_encoding=True)

    env = TransformedEnv(
        SerialEnv(num_envs, one_env), Compose(*memory.make_env_transforms(), RewardSum())
    )
    env.set_seed(seed)
    return env


def make_heads(memory: SMTMemoryModule, n_actions: int, hidden: int = 64):
    """Actor and critic MLPs on the memory features ``memory`` (*B, Z)."""
    actor = ProbabilisticActor(
        TensorDictModule(
            MLP(in_features=memory.memory_size, out_features=n_actions, num_cells=[hidden]),
            in_keys=["memory"],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(
        MLP(in_features=memory.memory_size, out_features=1, num_cells=[hidden]),
        in_keys=["memory"],
    )
    return actor, critic


def success_rate(env: TransformedEnv, policy, episodes: int) -> float:
    """Greedy episodes: the fraction that end with a positive return."""
    returns: list[float] = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        while len(returns) < episodes:
            rollout = env.rollout(10_000, policy, break_when_all_done=True)
            done = rollout["next", "done"].squeeze(-1)
            returns += rollout["next", "episode_reward"].squeeze(-1)[done].tolist()
    return sum(r > 0 for r in returns[:episodes]) / episodes


def train(
    checkpoint: str | Path,
    length: int = 50,
    frames: int = 40_960,
    num_envs: int = 8,
    frames_per_batch: int = 1024,
    epochs: int = 4,
    minibatch: int = 256,
    seed: int = 0,
    on_batch=None,
):
    """PPO on the SMT memory; returns ``(policy, env)``. ``on_batch(data)`` sees every
    collected batch after the advantage is computed (for tests and logging)."""
    torch.manual_seed(seed)
    memory = SMTMemoryModule(checkpoint)
    env = make_env(memory, length, num_envs, seed)
    actor, critic = make_heads(memory, n_actions=2)
    policy = TensorDictSequential(memory, actor)
    collector = Collector(env, policy, frames_per_batch=frames_per_batch, total_frames=frames)
    advantage = GAE(gamma=0.99, lmbda=0.95, value_network=critic)
    loss_fn = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coeff=0.01)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
    frames_seen = 0
    for data in collector:
        frames_seen += data.numel()
        memory.fill_next(data)  # ("next", "memory"): what the critic reads at t + 1
        with torch.no_grad():
            advantage(data)
        if on_batch is not None:
            on_batch(data)
        steps = data.reshape(-1)
        for _ in range(epochs):
            for idx in torch.randperm(steps.shape[0]).split(minibatch):
                losses = loss_fn(steps[idx])
                total = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                optim.zero_grad()
                total.backward()
                nn.utils.clip_grad_norm_(loss_fn.parameters(), 0.5)
                optim.step()
        done = data["next", "done"].squeeze(-1)
        if done.any():
            returns = data["next", "episode_reward"].squeeze(-1)[done]
            print(f"frames {frames_seen:>7}  train return {returns.mean():.2f}")
    collector.shutdown()
    return policy, env


def pretrained_checkpoint(length: int, out: Path) -> Path:
    """SMT-pretrain a memory for PassiveTMaze ``length`` into ``out`` (small settings)."""
    from agents.pipeline import pretrain

    overrides = [
        f"env.kwargs.length={length}",
        "data.episodes=500",
        "smt.updates=300",
        "offline_dmt.updates=50",
        "smt.eval_every=1000",
        f"out={out}",
    ]
    pretrain("configs/tmaze.yaml", overrides, progress=False)
    return out / "checkpoint"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="SMT checkpoint folder (default: pretrain one)")
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--frames", type=int, default=40_960)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/examples/torchrl_ppo")
    args = parser.parse_args()
    checkpoint = args.checkpoint or pretrained_checkpoint(args.length, Path(args.out) / "pretrain")
    policy, env = train(checkpoint, args.length, args.frames, seed=args.seed)
    print(f"success rate over 100 greedy episodes: {success_rate(env, policy, 100):.2f}")


if __name__ == "__main__":
    main()
