"""The declared structure of a dataset's ``meta.json``, checked whenever a dataset is opened.

Fields and types (the writer's output), then consistency: each chunk's lengths, returns and
successes list one entry per episode and its lengths sum to its steps, chunks are named in
increasing order (``chunk-000000``, ...; a dataset bounded by a capacity drops its oldest), and
the totals are the sums over the chunks.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from smt_rl.data.format import chunk_index, chunk_name
from smt_rl.records import NonNegativeInt, PositiveInt, Record, SpaceDescription


class EnvRecord(Record, extra="forbid"):
    """The task the episodes come from (compared, never built from here)."""

    id: str | None
    kwargs: dict[str, Any]
    entry_point: str | None


class ChunkRecord(Record, extra="forbid"):
    """One chunk: whole episodes, their lengths, returns and successes (None: not reported)."""

    name: str
    episodes: PositiveInt
    steps: PositiveInt
    lengths: list[PositiveInt]
    returns: list[float]
    successes: list[bool] | None

    @model_validator(mode="after")
    def _one_entry_per_episode(self) -> ChunkRecord:
        """lengths / returns / successes have ``episodes`` entries; the lengths sum to steps."""
        for field in ("lengths", "returns", "successes"):
            values = getattr(self, field)
            if values is not None and len(values) != self.episodes:
                raise ValueError(
                    f"{field} has {len(values)} entries, but episodes is {self.episodes}"
                )
        if sum(self.lengths) != self.steps:
            raise ValueError(f"lengths sum to {sum(self.lengths)}, but steps is {self.steps}")
        return self


class CollectionRecord(Record):
    """One collection run of the log (its other fields are free-form: policy, seed, ...)."""

    episodes: NonNegativeInt
    steps: NonNegativeInt


class DatasetMeta(Record, extra="forbid"):
    """A dataset's ``meta.json`` (format and version are checked before, with their own
    messages)."""

    format: str
    version: int
    env: EnvRecord
    observation_space: SpaceDescription
    action_space: SpaceDescription
    num_episodes: NonNegativeInt
    num_steps: NonNegativeInt
    chunks: list[ChunkRecord]
    collections: list[CollectionRecord]

    @model_validator(mode="after")
    def _chunks_add_up(self) -> DatasetMeta:
        """Chunks are named ``chunk-NNNNNN`` with increasing numbers (a dataset bounded by a
        capacity drops its oldest ones); the totals are their sums."""
        previous = -1
        for i, chunk in enumerate(self.chunks):
            index = chunk_index(chunk.name)
            if index is None or index <= previous:
                raise ValueError(
                    f"chunks[{i}].name must be a chunk name after {chunk_name(previous)!r} "
                    f"(chunk-NNNNNN, numbers increasing), not {chunk.name!r}"
                )
            previous = index
        episodes = sum(c.episodes for c in self.chunks)
        steps = sum(c.steps for c in self.chunks)
        if (self.num_episodes, self.num_steps) != (episodes, steps):
            raise ValueError(
                f"num_episodes / num_steps are {self.num_episodes} / {self.num_steps}, but the "
                f"chunks hold {episodes} / {steps}"
            )
        return self
