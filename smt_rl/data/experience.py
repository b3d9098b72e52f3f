"""The agent's own finished episodes, on disk as a trajectory dataset and in memory for sampling.

Each rollout's finished episodes are appended to a dataset folder (``RUN_DIR/experience``) as one
chunk, atomically, in the same format as logged data (``smt-rl pretrain data.path=`` reads it).
The store is bounded: only the newest ``capacity`` episodes are sampled, and chunks that hold none
of them are deleted. Deleting waits for :meth:`ExperienceStore.state_dict` when the caller keeps
resume states (``evict_on_save``), so a run resumed from its last state finds every chunk its
window needs; :meth:`ExperienceStore.load_state_dict` forgets the chunks written after the state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from tensordict import TensorDict

from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.data.writer import TrajectoryWriter
from smt_rl.errors import DatasetError

# what a stored step holds (smt_rl.data.format), besides the step inputs the agent adds
STORED = ("observation", "action", "is_init", "step_count", "next")
NEXT = ("observation", "reward", "terminated", "truncated", "done")


class ExperienceStore:
    """Finished episodes of the agent: appended to ``folder``, the newest ``capacity`` sampled.

    Args:
        folder: the dataset folder (created, or continued when it holds the same task).
        env: the task identity (:func:`smt_rl.data.writer.env_description`).
        observation_space: single-environment observation space.
        action_space: single-environment action space.
        capacity: episodes kept for sampling.
        evict_on_save: delete chunks that left the window only in :meth:`state_dict` (a run that
            writes resume states) rather than at once.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        env: Mapping[str, Any],
        observation_space: spaces.Space,
        action_space: spaces.Space,
        capacity: int,
        evict_on_save: bool = False,
    ) -> None:
        self.folder, self.capacity, self.evict_on_save = Path(folder), capacity, evict_on_save
        self.writer = TrajectoryWriter(self.folder, env, observation_space, action_space)
        self.episodes: list[TensorDict] = []  # the window, oldest first, each (L,)
        self._window_chunks: list[int] = []  # episodes of each listed chunk still in the window

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def steps(self) -> int:
        """Steps in the window."""
        return sum(e.shape[0] for e in self.episodes)

    def add(self, episodes: list[TensorDict]) -> None:
        """Append finished episodes ``(L,)`` (the dataset layout plus any step-input keys) as one
        chunk, then keep the newest ``capacity`` in the window."""
        if not episodes:
            return
        stored = [_stored(e) for e in episodes]
        lengths = [e.shape[0] for e in stored]
        returns = [float(e["next", "reward"].sum()) for e in stored]
        self.writer.write_chunk(torch.cat(stored, 0), lengths, returns, None)
        self.episodes.extend(episodes)
        self._window_chunks.append(len(episodes))
        self._shrink()
        if not self.evict_on_save:
            self._evict()

    def _shrink(self) -> None:
        """Drop the oldest episodes beyond ``capacity`` from the window."""
        extra = len(self.episodes) - self.capacity
        if extra <= 0:
            return
        self.episodes = self.episodes[extra:]
        while extra > 0:
            taken = min(extra, self._window_chunks[0])
            self._window_chunks[0] -= taken
            extra -= taken
            if self._window_chunks[0] == 0:
                self._window_chunks.pop(0)

    def _evict(self) -> None:
        """Delete the chunks none of whose episodes is in the window."""
        outside = len(self.writer.meta["chunks"]) - len(self._window_chunks)
        if outside > 0:
            self.writer.drop_oldest(outside)

    def reward_scale(self) -> float:
        """The largest |reward| in the window (1.0 while there is none or all are zero)."""
        largest = max((float(e["next", "reward"].abs().max()) for e in self.episodes), default=0.0)
        return largest if largest > 0 else 1.0

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, Any]:
        """How many chunks are listed and how many of their episodes are in the window (deleting,
        first, the chunks that left it)."""
        self._evict()
        return {
            "chunks": len(self.writer.meta["chunks"]),
            "window": list(self._window_chunks),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Back to a state: chunks written after it are forgotten, the window is read again."""
        listed = len(self.writer.meta["chunks"])
        if listed < int(state["chunks"]):
            raise DatasetError(
                f"{self.folder} lists {listed} chunks, the resume state needs "
                f"{state['chunks']}: the experience was changed or deleted; delete the resume "
                "state to start the RL phase over."
            )
        self.writer.keep_first(int(state["chunks"]))
        self._window_chunks = [int(n) for n in state["window"]]
        dataset = TrajectoryDataset(self.folder)
        kept = sum(self._window_chunks)
        first = dataset.num_episodes - kept
        self.episodes = [_with_step_inputs(dataset.episode(i)) for i in range(first, first + kept)]


def _stored(episode: TensorDict) -> TensorDict:
    """An episode ``(L,)`` with only the keys a dataset stores."""
    return episode.select(*STORED[:-1], *(("next", k) for k in NEXT))


def _with_step_inputs(episode: TensorDict) -> TensorDict:
    """A dataset episode ``(L,)`` as :meth:`ExperienceStore.add` keeps it in memory: stored keys
    plus ``prev_action``, ``prev_reward`` and ``mask`` (the dataset's window adds the first two)."""
    keys = (*STORED[:-1], *(("next", k) for k in NEXT), "prev_action", "prev_reward")
    episode = episode.select(*keys)
    episode.set("mask", torch.ones(episode.shape[0], dtype=torch.bool))
    return episode
