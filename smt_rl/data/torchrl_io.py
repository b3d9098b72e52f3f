"""Trajectory datasets to and from torchrl: collected TensorDicts in, replay buffers out.

In: what a torchrl ``Collector`` yields (batch ``(T,)`` or ``(B, T)``, time last) with an
``InitTracker`` (``is_init``) or a ``StepCounter`` (``step_count``) in the env. Whole episodes
are cut out of each row and appended to a dataset folder; the fragments at the row ends (an
episode already running when the batch started, or not finished when it ended) are dropped.

Out: the dataset's steps in torchrl's layout (``(S, 1)`` rewards, done flags, ``is_init`` and
``step_count``; ``("collector", "traj_ids")`` = episode index, so that torchrl's
``SliceSampler(traj_key=("collector", "traj_ids"))`` samples whole sub-trajectories), as a
TensorDict or filled into a torchrl ``ReplayBuffer``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase

from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.data.writer import TrajectoryWriter, env_description
from smt_rl.errors import DatasetError
from smt_rl.spaces import action_indices, leaf_spaces, torch_dtype

_DONE_KEYS = ("terminated", "truncated", "done")


def per_step(value: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """``(*B, 1)`` -> ``(*B,)``; ``(*B,)`` unchanged."""
    if value.dim() == batch_dims + 1 and value.shape[-1] == 1:
        return value.squeeze(-1)
    return value


def _observation(
    td: TensorDictBase, space: spaces.Space, where: str
) -> TensorDictBase | torch.Tensor:
    """The observation of ``td``: ``observation``, or a Dict space's members at the root."""
    if "observation" in td:
        value = td.get("observation")
    elif isinstance(space, spaces.Dict) and all(k in td for k in space.spaces):
        value = td.select(*space.spaces)
    else:
        raise DatasetError(
            f"the collected tensordict has no {where!r} entry (keys: "
            f"{sorted(map(str, td.keys()))}); the observation must be under 'observation' (or, "
            "for a Dict observation space, "
            "its members at the root as torchrl's GymEnv writes them)."
        )
    batch = td.batch_size
    for path, leaf in leaf_spaces(space).items():
        tensor = value.get(path) if path else value
        if tuple(tensor.shape) != (*batch, *leaf.shape):
            name = ".".join((where, *path))
            raise DatasetError(
                f"{name} has shape {tuple(tensor.shape[len(batch) :])} per step but the "
                f"observation space says {leaf.shape}; pass the spaces of the env that "
                "collected it."
            )
    return value


def _cast(value: torch.Tensor | TensorDictBase, space: spaces.Space):
    if isinstance(space, spaces.Dict):
        return TensorDict(
            {k: _cast(value.get(k), s) for k, s in space.spaces.items()},
            batch_size=value.batch_size,
        )
    return value.to(torch_dtype(space))


def episodes_from_tensordict(
    data: TensorDictBase, observation_space: spaces.Space, action_space: spaces.Space
) -> tuple[TensorDict, list[int], list[float], list[bool] | None]:
    """Cut the whole episodes out of torchrl-collected ``data`` (batch ``(T,)`` or ``(*B, T)``).

    Returns:
        ``(steps, lengths, returns, successes)``: ``steps`` is a TensorDict of batch ``(S,)`` in
        the dataset's stored layout (:mod:`smt_rl.data.format`), episodes contiguous in order
        (row by row); ``successes`` from ``("next", "success")`` when present.

    Raises:
        DatasetError: a key is missing or a shape does not fit the spaces (the message names it).
    """
    if data.ndim == 0:
        raise DatasetError("data has no batch dims; pass what a Collector yields: (T,) or (B, T).")
    rows = data.reshape(-1, data.shape[-1]) if data.ndim != 1 else data.unsqueeze(0)
    for key in ("action", ("next", "reward"), ("next", "done")):
        if key not in rows.keys(True):
            raise DatasetError(f"the collected tensordict has no {key!r} entry; it is required.")
    fields = step_fields(rows, observation_space, action_space)
    pieces, lengths, returns, successes = [], [], [], []
    for b, start, end in _episode_bounds(fields["starts"], fields["ends"]):
        pieces.append(_episode(fields, b, start, end))
        lengths.append(end - start)
        returns.append(float(fields["reward"][b, start:end].sum()))
        if fields["success"] is not None:
            successes.append(bool(fields["success"][b, end - 1]))
    if not pieces:
        raise DatasetError(
            "the collected tensordict holds no whole episode (an is_init step followed by a done "
            "step in the same row); collect longer batches (frames_per_batch)."
        )
    has_success = fields["success"] is not None
    return torch.cat(pieces, 0), lengths, returns, (successes if has_success else None)


def step_fields(
    rows: TensorDictBase, observation_space: spaces.Space, action_space: spaces.Space
) -> dict[str, Any]:
    """Rows ``(B, T)`` of collected steps as the per-step fields of the stored layout, plus
    ``starts`` / ``ends`` (episode boundaries, ``(B, T)`` bool) and ``success`` (or None)."""
    if "is_init" in rows:
        starts = per_step(rows.get("is_init"), 2).bool()
    elif "step_count" in rows:
        starts = per_step(rows.get("step_count"), 2) == 0
    else:
        raise DatasetError(
            "the collected tensordict has neither 'is_init' nor 'step_count': episode starts "
            "cannot be told apart. Add torchrl.envs.InitTracker() (or StepCounter()) to the env."
        )
    ends = per_step(rows.get(("next", "done")), 2).bool()
    actions = action_indices(action_space, rows.get("action"), 2).to(torch_dtype(action_space))
    if tuple(actions.shape[2:]) != tuple(action_space.shape):
        raise DatasetError(
            f"action has shape {tuple(actions.shape[2:])} per step but the action space says "
            f"{action_space.shape}; pass the spaces of the env that collected it."
        )
    flags = {
        k: per_step(rows.get(("next", k)), 2).bool()
        for k in _DONE_KEYS
        if ("next", k) in rows.keys(True)
    }
    flags.setdefault("terminated", ends)
    flags.setdefault("truncated", ends & ~flags["terminated"])
    has_success = ("next", "success") in rows.keys(True)
    return {
        "starts": starts,
        "ends": ends,
        "observation": _cast(
            _observation(rows, observation_space, "observation"), observation_space
        ),
        "next_observation": _cast(
            _observation(rows.get("next"), observation_space, "next.observation"),
            observation_space,
        ),
        "action": actions,
        "reward": per_step(rows.get(("next", "reward")), 2).float(),
        "flags": flags,
        "success": per_step(rows.get(("next", "success")), 2).bool() if has_success else None,
    }


def _episode_bounds(starts: torch.Tensor, ends: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(row, first step, last step + 1)`` of every whole episode in rows ``(B, T)``: from an
    episode start to the next end in the same row (fragments at the row ends are dropped)."""
    bounds = []
    for b in range(starts.shape[0]):
        start = None
        for t in range(starts.shape[1]):
            if starts[b, t]:
                start = t
            if ends[b, t] and start is not None:
                bounds.append((b, start, t + 1))
                start = None
    return bounds


def _episode(fields: dict[str, Any], b: int, start: int, end: int) -> TensorDict:
    """Steps ``start .. end - 1`` of row ``b`` as one episode ``(L,)`` in the stored layout."""
    n, span = end - start, slice(start, end)
    last = torch.arange(n) == n - 1
    episode = TensorDict(
        {
            "observation": fields["observation"][b, span],
            "action": fields["action"][b, span],
            "step_count": torch.arange(n),
            "is_init": torch.arange(n) == 0,
            ("next", "observation"): fields["next_observation"][b, span],
            ("next", "reward"): fields["reward"][b, span],
            **{("next", k): v[b, span] & last for k, v in fields["flags"].items()},
        },
        batch_size=[n],
    )
    episode.set(("next", "done"), last)
    return episode


def write_tensordict(
    data: TensorDictBase,
    path: str | os.PathLike,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    env_id: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    entry_point: str | None = None,
) -> TrajectoryDataset:
    """Append the whole episodes of torchrl-collected ``data`` to the dataset folder ``path``.

    Creates the folder, or appends to a dataset of the same task and spaces (otherwise
    :class:`DatasetError`). Atomic like ``smt-rl collect``: a killed call leaves the dataset as
    it was. The result trains SMT like any collected dataset (``data.path=PATH``).

    Args:
        data: a Collector batch (``(T,)`` or ``(B, T)``) or several concatenated on time.
        path: the dataset folder.
        observation_space: the single-environment gymnasium observation space.
        action_space: the single-environment gymnasium action space.
        env_id: the task's gymnasium id (stored, and checked when appending; set it so that
            ``smt-rl pretrain`` can rebuild the env for evaluation).
        env_kwargs: the task's keyword arguments (stored and checked like ``env_id``).
        entry_point: the task's entry point when it is not registered (stored).

    Returns:
        The dataset, reopened.
    """
    steps, lengths, returns, successes = episodes_from_tensordict(
        data, observation_space, action_space
    )
    writer = TrajectoryWriter(
        path, env_description(env_id, env_kwargs, entry_point), observation_space, action_space
    )
    writer.begin_collection({"policy": "torchrl", "seed": None, "num_envs": None})
    writer.write_chunk(steps, lengths, returns, successes)
    writer.end_collection(0.0)
    return TrajectoryDataset(path)


def dataset_to_tensordict(dataset: TrajectoryDataset | str | os.PathLike) -> TensorDict:
    """All steps of a dataset in torchrl's layout: batch ``(S,)``, episodes in order.

    Rewards, done flags, ``is_init`` and ``step_count`` are ``(S, 1)``; ``("collector",
    "traj_ids")`` ``(S,)`` holds each step's episode index.
    """
    if not isinstance(dataset, TrajectoryDataset):
        dataset = TrajectoryDataset(dataset)
    steps = dataset.to_tensordict()
    for key in ("is_init", "step_count", *[("next", k) for k in ("reward", *_DONE_KEYS)]):
        steps.set(key, steps.get(key).unsqueeze(-1))
    steps.set(
        ("collector", "traj_ids"),
        torch.repeat_interleave(torch.arange(dataset.num_episodes), dataset.episode_lengths),
    )
    return steps


def dataset_to_replay_buffer(
    dataset: TrajectoryDataset | str | os.PathLike,
    sampler: Any = None,
    batch_size: int | None = None,
):
    """A torchrl ``TensorDictReplayBuffer`` (``LazyTensorStorage`` sized to fit) holding every step
    of the dataset (see :func:`dataset_to_tensordict` for the layout).

    Args:
        dataset: the dataset or its folder.
        sampler: a torchrl sampler (default uniform over steps; e.g.
            ``SliceSampler(slice_len=32, traj_key=("collector", "traj_ids"))``).
        batch_size: the buffer's default sample size.
    """
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    steps = dataset_to_tensordict(dataset)
    kwargs = {} if sampler is None else {"sampler": sampler}
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(steps.shape[0]), batch_size=batch_size, **kwargs
    )
    buffer.extend(steps)
    return buffer
