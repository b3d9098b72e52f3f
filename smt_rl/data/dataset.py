"""Read a trajectory dataset folder and sample training batches of whole episodes or windows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from tensordict import TensorDict

from smt_rl.data.chunk import open_chunk
from smt_rl.data.format import CHUNK_DIR, Layout, step_layout
from smt_rl.data.writer import read_meta
from smt_rl.errors import DatasetError
from smt_rl.spaces import space_from_dict

# Keys whose value at t-1 becomes the previous-step input at t.
_PREV_KEYS = {"prev_action": "action", "prev_reward": ("next", "reward")}


class TrajectoryDataset:
    """Episodes logged by ``smt-rl collect``, opened read-only (memory-mapped, not loaded).

    Every sampled batch is a TensorDict of batch size ``(B, T)`` with the stored per-step keys
    (see :mod:`smt_rl.data.format`) plus derived ones:

    - ``prev_action`` (a_{t-1}) and ``prev_reward`` (r_{t-1}): zeros at the first step of an
      episode, where ``is_init`` is True;
    - ``mask`` (bool): True on real steps, False on padding (padding values are zero);
    - ``episode`` (int64): the episode's index in the dataset.

    A window never crosses an episode boundary: windows of an episode shorter than ``T`` are the
    whole episode, padded at the end.

    Args:
        path: the dataset folder.

    Raises:
        DatasetError: missing folder, not a dataset, corrupt or invalid metadata, truncated chunk
            files, or a chunk holding anything but the stored layout (see
            :mod:`smt_rl.data.chunk`: nothing in a dataset is ever unpickled).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        self.observation_space: spaces.Space = space_from_dict(self.meta["observation_space"])
        self.action_space: spaces.Space = space_from_dict(self.meta["action_space"])
        layout = step_layout(self.observation_space, self.action_space)
        self._chunks: list[TensorDict] = [self._open_chunk(c, layout) for c in self.meta["chunks"]]
        lengths = [n for c in self.meta["chunks"] for n in c["lengths"]]
        #: (N,) int64: steps of each episode.
        self.episode_lengths = torch.tensor(lengths, dtype=torch.int64)
        #: (N,) int64: flat index of each episode's first step (over all chunks, in order).
        self.episode_starts = torch.cumsum(self.episode_lengths, 0) - self.episode_lengths
        #: (C+1,) int64: flat index where each chunk starts, and the total.
        self._chunk_offsets = torch.tensor(
            [0, *torch.cumsum(torch.tensor([c["steps"] for c in self.meta["chunks"]]), 0).tolist()]
        )

    def _open_chunk(self, chunk: dict[str, Any], layout: Layout) -> TensorDict:
        """The chunk ``meta.json`` lists as ``chunk``, its files checked and mapped read-only."""
        folder = self.path / CHUNK_DIR / chunk["name"]
        fix = "get the dataset again from where it came from, or re-collect it."
        if not folder.is_dir():
            raise DatasetError(
                f"dataset {str(self.path)!r} is truncated: {folder} is missing; {fix}"
            )
        return open_chunk(folder, layout, chunk["steps"], fix)

    # ------------------------------------------------------------------ description
    @property
    def env_id(self) -> str | None:
        """The gymnasium id the data was collected on."""
        return self.meta["env"]["id"]

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the environment was built with."""
        return dict(self.meta["env"]["kwargs"])

    @property
    def entry_point(self) -> str | None:
        """``"package.module:Class"`` of a user environment, or None."""
        return self.meta["env"]["entry_point"]

    @property
    def num_episodes(self) -> int:
        return int(self.episode_lengths.numel())

    @property
    def num_steps(self) -> int:
        return int(self.meta["num_steps"])

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (
            f"TrajectoryDataset({str(self.path)!r}, env={self.env_id!r}, "
            f"episodes={self.num_episodes}, steps={self.num_steps})"
        )

    # ------------------------------------------------------------------ gathering
    def _gather(self, flat_index: torch.Tensor, keys: list | None = None) -> TensorDict:
        """Rows ``flat_index`` (any shape) of the concatenated steps, as an in-memory TensorDict."""
        shape = flat_index.shape
        flat = flat_index.reshape(-1)
        chunk_of = torch.searchsorted(self._chunk_offsets[1:], flat, right=True)
        out: TensorDict | None = None
        for c, steps in enumerate(self._chunks):
            if keys is not None:
                steps = steps.select(*keys)
            sel = (chunk_of == c).nonzero().squeeze(-1)
            if sel.numel() == 0:
                continue
            rows = steps[flat[sel] - self._chunk_offsets[c]]
            if sel.numel() == flat.numel():
                out = rows
                break
            if out is None:
                out = rows[:1].expand(flat.numel()).clone()
            out[sel] = rows
        assert out is not None
        return out.reshape(shape)

    def windows(self, episodes: torch.Tensor, starts: torch.Tensor, length: int) -> TensorDict:
        """Windows ``[start, start + length)`` of the given episodes, padded past each episode end.

        Args:
            episodes: (B,) int64 episode indices.
            starts: (B,) int64 first step of each window within its episode.
            length: T, the window length.

        Returns:
            TensorDict of batch size (B, T) (keys in the class docstring).
        """
        if self.num_episodes == 0:
            raise DatasetError(f"dataset {str(self.path)!r} has no episodes; collect some first.")
        episodes = torch.as_tensor(episodes, dtype=torch.int64)
        starts = torch.as_tensor(starts, dtype=torch.int64)
        lengths = self.episode_lengths[episodes]
        if (starts < 0).any() or (starts >= lengths).any():
            raise IndexError("window start outside its episode")
        t = starts[:, None] + torch.arange(length)[None, :]  # (B, T) step within episode
        mask = t < lengths[:, None]
        t_clamped = torch.minimum(t, lengths[:, None] - 1)
        flat = self.episode_starts[episodes][:, None] + t_clamped
        batch = self._gather(flat)
        prev = self._gather((flat - 1).clamp_min(0), keys=list(_PREV_KEYS.values()))
        has_prev = t_clamped > 0
        for name, key in _PREV_KEYS.items():
            batch.set(name, _where(has_prev, prev.get(key), torch.zeros_like(prev.get(key))))
        batch = batch.apply(lambda x: _where(mask, x, torch.zeros_like(x)))
        batch.set("mask", mask)
        batch.set("episode", episodes[:, None].expand(-1, length).clone())
        return batch

    def sample_windows(
        self, batch_size: int, length: int, generator: torch.Generator | None = None
    ) -> TensorDict:
        """``batch_size`` windows of ``length`` steps, uniform over all windows in the dataset.

        An episode of L steps offers ``max(L - length + 1, 1)`` windows, so long episodes are
        sampled in proportion to their length and every step is equally likely to be covered.

        Returns:
            TensorDict of batch size (B, T).
        """
        if self.num_episodes == 0:
            raise DatasetError(f"dataset {str(self.path)!r} has no episodes; collect some first.")
        counts = (self.episode_lengths - length + 1).clamp_min(1)
        episodes = torch.multinomial(
            counts.double(), batch_size, replacement=True, generator=generator
        )
        starts = (torch.rand(batch_size, generator=generator) * counts[episodes]).long()
        return self.windows(episodes, starts, length)

    def sample_episodes(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        max_length: int | None = None,
    ) -> TensorDict:
        """``batch_size`` whole episodes (uniformly, with replacement), padded to the longest.

        Args:
            max_length: keep at most this many first steps of each episode.

        Returns:
            TensorDict of batch size (B, T), T = the longest (cropped) episode in the batch.
        """
        if self.num_episodes == 0:
            raise DatasetError(f"dataset {str(self.path)!r} has no episodes; collect some first.")
        episodes = torch.randint(self.num_episodes, (batch_size,), generator=generator)
        length = int(self.episode_lengths[episodes].max())
        if max_length is not None:
            length = min(length, max_length)
        return self.windows(episodes, torch.zeros_like(episodes), length)

    def episode(self, index: int) -> TensorDict:
        """Episode ``index`` whole: a TensorDict of batch size (L,)."""
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range (dataset has {self.num_episodes})")
        index = index % self.num_episodes
        length = int(self.episode_lengths[index])
        return self.windows(torch.tensor([index]), torch.tensor([0]), length)[0]

    def reward_scale(self) -> float:
        """The largest absolute reward in the dataset (1.0 when all rewards are zero)."""
        largest = max((float(c["next", "reward"].abs().max()) for c in self._chunks), default=0.0)
        return largest if largest > 0 else 1.0

    def to_tensordict(self) -> TensorDict:
        """All stored steps, concatenated in episode order, in memory: batch size (S,)."""
        if not self._chunks:
            raise DatasetError(f"dataset {str(self.path)!r} has no episodes; collect some first.")
        return torch.cat([c.to_tensordict() for c in self._chunks], 0)


def _where(mask: torch.Tensor, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with ``mask`` (B, T) broadcast over the trailing dims of ``x``."""
    return torch.where(mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim()))), x, other)
