"""The whole SMT pipeline in plain torchrl on POPGym RepeatFirst (Easy): collect, pretrain the
memory from a ReplayBuffer with SMTLoss, then PPO (ClipPPOLoss) on the memory while DMTLoss
refines it on the states the policy visits.

    python examples/torchrl_smt.py [--seed 0] [--episodes 2000] [--updates 600] [--frames 100000]

The settings are those of ``configs/popgym_repeat_first.yaml``, so the result compares with
``smt-rl train configs/popgym_repeat_first.yaml`` at the same budget. The SMT pieces are the
losses (:mod:`smt_rl.integrations.torchrl_losses`), the memory module and its env transforms;
collection, replay, advantage and the PPO loss are torchrl's own.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gymnasium as gym
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torch.distributions import Categorical
from torchrl.collectors import Collector
from torchrl.data import SliceSampler
from torchrl.envs import Compose, GymEnv, RewardSum, SerialEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, RandomPolicy, set_exploration_type
from torchrl.modules import MLP, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

import envs  # noqa: F401  (registers the smt_rl/popgym-* ids)
from agents.config import TrainConfig
from smt_rl.config import load_config
from smt_rl.data.torchrl_io import dataset_to_replay_buffer, write_tensordict
from smt_rl.integrations import DMTLoss, PretrainedMemory, SMTLoss
from smt_rl.integrations.torchrl import SMTMemoryModule
from smt_rl.smt.model import SMTModel

TASK = "smt_rl/popgym-RepeatFirstEasy-v0"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "popgym_repeat_first.yaml"


def make_env(num_envs: int, seed: int, transforms=()) -> TransformedEnv:
    """``num_envs`` copies of the task with what the memory reads (when ``transforms`` are the
    memory module's) and the episode return (``episode_reward``)."""
    env = TransformedEnv(
        SerialEnv(num_envs, lambda: GymEnv(TASK, categorical_action_encoding=True)),
        Compose(*transforms, RewardSum()),
    )
    env.set_seed(seed)
    return env


def collect_random(folder: Path, episodes: int, seed: int, num_envs: int = 8) -> Path:
    """Random-policy episodes into a dataset folder (whole episodes only)."""
    from torchrl.envs import InitTracker, StepCounter

    env = make_env(num_envs, seed, (InitTracker(), StepCounter()))
    spaces = gym.make(TASK)
    collector = Collector(
        env, RandomPolicy(env.action_spec), frames_per_batch=4096, total_frames=-1
    )
    written = 0
    for data in collector:
        written = write_tensordict(
            data, folder, spaces.observation_space, spaces.action_space, TASK
        ).num_episodes
        if written >= episodes:
            break
    collector.shutdown()
    return folder


def pretrain(model: SMTModel, cfg: TrainConfig, data: Path, updates: int, seed: int) -> None:
    """SMT from a ReplayBuffer of whole episodes: SMTLoss, AdamW, warm-up then cosine decay."""
    from smt_rl.data import TrajectoryDataset

    dataset = TrajectoryDataset(data)
    length = int(dataset.episode_lengths.min())
    model.decoder.reward_scale.fill_(dataset.reward_scale())
    buffer = dataset_to_replay_buffer(
        dataset,
        sampler=SliceSampler(
            slice_len=length, traj_key=("collector", "traj_ids"), strict_length=True
        ),
        batch_size=cfg.smt.batch_size * length,
    )
    loss_fn = SMTLoss(model, cfg.smt, torch.Generator().manual_seed(seed))
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=cfg.smt.lr, weight_decay=cfg.smt.weight_decay
    )
    warmup = max(1, cfg.smt.warmup)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda u: (
            min(1.0, (u + 1) / warmup)
            * (0.1 + 0.45 * (1 + torch.cos(torch.tensor(torch.pi * u / max(1, updates))).item()))
        ),
    )
    for update in range(updates):
        out = loss_fn(buffer.sample().reshape(cfg.smt.batch_size, length))
        optimiser.zero_grad()
        out["loss_smt"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.smt.grad_clip)
        optimiser.step()
        schedule.step()
        if (update + 1) % 100 == 0:
            print(f"smt update {update + 1:>5}  loss {float(out['loss_smt'].detach()):.4f}")


def make_heads(size: int, n_actions: int, hidden: int):
    actor = ProbabilisticActor(
        TensorDictModule(
            MLP(in_features=size, out_features=n_actions, num_cells=[hidden, hidden]),
            in_keys=["memory"],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(
        MLP(in_features=size, out_features=1, num_cells=[hidden, hidden]), in_keys=["memory"]
    )
    return actor, critic


def train_ppo(model: SMTModel, cfg: TrainConfig, frames: int, seed: int):
    """PPO on the memory, DMT after each batch; returns ``(policy, memory module)``."""
    spaces = gym.make(TASK)
    # the memory module runs the model's own step encoder and cell: DMT's updates reach it
    memory = SMTMemoryModule(
        PretrainedMemory(
            model.step_encoder, model.cell, spaces.observation_space, spaces.action_space
        )
    )
    env = make_env(cfg.env.num_envs, seed, memory.make_env_transforms())
    actor, critic = make_heads(memory.memory_size, int(spaces.action_space.n), cfg.ppo.hidden)
    policy = TensorDictSequential(memory, actor)
    per_batch = cfg.ppo.n_steps * cfg.env.num_envs
    collector = Collector(env, policy, frames_per_batch=per_batch, total_frames=frames)
    advantage = GAE(gamma=cfg.ppo.gamma, lmbda=cfg.ppo.gae_lambda, value_network=critic)
    ppo = ClipPPOLoss(actor, critic, clip_epsilon=cfg.ppo.clip, entropy_coeff=cfg.ppo.ent_coef)
    ppo_optim = torch.optim.Adam(ppo.parameters(), lr=cfg.ppo.lr, eps=1e-5)
    dmt = DMTLoss(model, anchor_coef=cfg.onpolicy_dmt.anchor_coef)
    dmt_optim = torch.optim.SGD(
        model.cell.transition_parameters(), lr=cfg.onpolicy_dmt.lr, momentum=0.9
    )
    seen = 0
    for data in collector:
        seen += data.numel()
        memory.fill_next(data)
        with torch.no_grad():
            advantage(data)
        steps = data.reshape(-1)
        for _ in range(cfg.ppo.epochs):
            for idx in torch.randperm(steps.shape[0]).split(cfg.ppo.minibatch_size):
                losses = ppo(steps[idx])
                total = (
                    losses["loss_objective"]
                    + cfg.ppo.vf_coef * losses["loss_critic"]
                    + losses["loss_entropy"]
                )
                ppo_optim.zero_grad()
                total.backward()
                nn.utils.clip_grad_norm_(ppo.parameters(), cfg.ppo.max_grad_norm)
                ppo_optim.step()
        if cfg.onpolicy_dmt.enabled:
            for _ in range(cfg.onpolicy_dmt.updates_per_rollout):
                loss = dmt(data)["loss_dmt"]
                dmt_optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.cell.transition_parameters(), 1.0)
                dmt_optim.step()
        done = data["next", "done"].squeeze(-1)
        if done.any():
            returns = data["next", "episode_reward"].squeeze(-1)[done]
            print(f"frames {seen:>7}  train return {returns.mean():.3f}")
    collector.shutdown()
    return policy, memory


def evaluate(env: TransformedEnv, policy, episodes: int = 100) -> float:
    """Mean return of greedy episodes."""
    returns: list[float] = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        while len(returns) < episodes:
            rollout = env.rollout(10_000, policy, break_when_all_done=True)
            done = rollout["next", "done"].squeeze(-1)
            returns += rollout["next", "episode_reward"].squeeze(-1)[done].tolist()
    return sum(returns[:episodes]) / episodes


def run(seed: int, episodes: int, updates: int, frames: int, folder: Path) -> float:
    """Collect, pretrain, train, evaluate; returns the greedy mean return over 100 episodes."""
    torch.manual_seed(seed)
    cfg = load_config(TrainConfig, CONFIG)
    spaces = gym.make(TASK)
    model = SMTModel(cfg.model, spaces.observation_space, spaces.action_space)
    data = collect_random(folder / "data", episodes, seed)
    pretrain(model, cfg, data, updates, seed)
    policy, memory = train_ppo(model, cfg, frames, seed)
    return evaluate(make_env(cfg.env.num_envs, seed + 10_000, memory.make_env_transforms()), policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--out", default=None, help="folder for the dataset (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        score = run(args.seed, args.episodes, args.updates, args.frames, folder)
    print(f"greedy mean return over 100 episodes: {score:.3f}")


if __name__ == "__main__":
    main()
