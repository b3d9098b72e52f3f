"""Does an SMT memory hold MiniGrid-Memory's start object after the agent has looked at it?

For each of N episodes the agent turns around (two left turns: the start-room object is then in view
in every start position), then moves at random for up to 10 steps; a linear probe (trained on half
the episodes, tested on the other half) reads the start object (key or ball) from the student
memory and from the teacher's label at the last step. 0.5 is chance.

    python benchmarks/minigrid_memory_probe.py RUN_DIR/pretrain/checkpoint [--episodes 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from envs import make_env
from smt_rl.memory import MemoryRunner
from smt_rl.smt.evaluate import linear_probe_accuracy
from smt_rl.smt.model import load_smt_model
from smt_rl.spaces import batch_to_tensor, stack_observations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--env", default="MiniGrid-MemoryS7-v0")
    args = parser.parse_args()
    model = load_smt_model(args.checkpoint)
    memory = MemoryRunner(
        model.step_encoder, model.cell, model.observation_space, model.action_space
    )
    space = model.observation_space
    env = make_env(args.env, {"movement_only": True})
    rng = np.random.default_rng(0)
    student, teacher, labels = [], [], []
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        base = env.unwrapped
        labels.append(0 if base.grid.get(1, base.height // 2 - 1).type == "key" else 1)
        state, inputs = memory.initial_state(1), []
        for t in range(12):
            observation = batch_to_tensor(space, stack_observations([obs], space), 1)
            step = memory.inputs(observation, state, torch.tensor([t == 0]))
            inputs.append(step[0])
            state.memory = memory.transition(step, state.memory)[2]
            action = 0 if t < 2 else int(rng.integers(3))
            obs, reward, terminated, truncated, _ = env.step(action)
            state.prev_action = torch.tensor([action])
            state.prev_reward = torch.tensor([float(reward)])
            state.step_count = state.step_count + 1
            if terminated or truncated:
                break
        with torch.no_grad():
            starts = torch.arange(len(inputs))[None] == 0
            label = model.labels(model.step_encoder(torch.stack(inputs)[None]), starts)
        student.append(state.memory[0].flatten())
        teacher.append(label[0, -1].flatten())
    y = torch.tensor(labels)
    print(
        f"start object read from the student memory: "
        f"{linear_probe_accuracy(torch.stack(student), y):.3f}, from the teacher's label: "
        f"{linear_probe_accuracy(torch.stack(teacher), y):.3f} ({len(y)} episodes; chance 0.5)"
    )


if __name__ == "__main__":
    main()
