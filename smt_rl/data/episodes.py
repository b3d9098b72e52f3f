"""Whole episodes out of rollouts: steps of N environments, time first, cut at episode ends.

A rollout ``(T, N)`` holds one row per environment step in the dataset layout
(:mod:`smt_rl.data.format`: the step inputs ``observation``, ``prev_action``, ``prev_reward``,
``is_init``, ``step_count``; ``action``; under ``next``: ``observation``, ``reward``,
``terminated``, ``truncated``, ``done``). Episodes run across rollout boundaries, so the steps of
each environment's unfinished episode are kept until it ends.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase


class EpisodeAssembler:
    """Collects each environment's steps and hands out its episodes once they end.

    Args:
        num_envs: N, the environments of the rollouts.
    """

    def __init__(self, num_envs: int) -> None:
        self.pieces: list[list[TensorDict]] = [[] for _ in range(num_envs)]  # per env, in order

    def add(self, steps: TensorDictBase) -> list[TensorDict]:
        """Take a rollout ``(T, N)``; return the episodes ``(L,)`` that ended in it, in the order
        they ended (by step, then environment), each with ``mask`` True on every step."""
        done = steps["next", "done"].reshape(steps.shape).cpu()
        finished: list[tuple[int, int, TensorDict]] = []
        for env in range(steps.shape[1]):
            column = steps[:, env]
            start = 0
            for end in (done[:, env].nonzero().flatten() + 1).tolist():
                self.pieces[env].append(column[start:end])
                episode = torch.cat(self.pieces[env], 0)
                episode.set("mask", torch.ones(episode.shape[0], dtype=torch.bool))
                finished.append((end, env, episode))
                self.pieces[env], start = [], end
            if start < steps.shape[0]:
                self.pieces[env].append(column[start:])
        finished.sort(key=lambda item: item[:2])
        return [episode for _, _, episode in finished]

    def state_dict(self) -> dict[str, Any]:
        """The unfinished episodes' steps (plain tensors, for resume states)."""
        return {
            "pieces": [
                {"steps": torch.cat(p, 0).to_dict(), "length": sum(x.shape[0] for x in p)}
                if p
                else None
                for p in self.pieces
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pieces = [
            [] if item is None else [TensorDict(item["steps"], [item["length"]])]
            for item in state["pieces"]
        ]
