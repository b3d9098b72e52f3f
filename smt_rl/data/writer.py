"""Append whole episodes to a trajectory dataset folder, atomically, chunk by chunk."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gymnasium import spaces
from tensordict import TensorDict

from smt_rl.data.format import (
    CHUNK_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    chunk_index,
    chunk_name,
)
from smt_rl.data.meta import DatasetMeta
from smt_rl.errors import DatasetError
from smt_rl.faults import kill_point
from smt_rl.io import atomic_write_bytes, atomic_write_json, read_format_json
from smt_rl.locks import is_lock_file
from smt_rl.records import check_record
from smt_rl.spaces import check_space, space_to_dict


def env_description(
    env_id: str | None, kwargs: Mapping[str, Any] | None, entry_point: str | None
) -> dict[str, Any]:
    """The task identity stored with (and compared against) a dataset: JSON-normalised."""
    desc = {"id": env_id, "kwargs": dict(kwargs or {}), "entry_point": entry_point}
    try:
        return json.loads(json.dumps(desc, sort_keys=True))
    except TypeError as exc:
        raise DatasetError(f"env.kwargs must be JSON-serialisable to be stored: {exc}") from exc


def read_meta(path: Path) -> dict[str, Any]:
    """Read and check ``meta.json`` of the dataset at ``path`` (fields, types and consistency:
    :class:`smt_rl.data.meta.DatasetMeta`); a :class:`DatasetError` naming the file and the field
    when it is missing, corrupt or invalid."""
    if not path.exists():
        raise DatasetError(
            f"dataset folder {str(path)!r} does not exist; create it with "
            f"`smt-rl collect ENV_ID --episodes N --out {path}` or fix the path."
        )
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise DatasetError(
            f"{str(path)!r} is not a smt_rl trajectory dataset (no {META_FILE}); point to a "
            "folder written by `smt-rl collect`, or collect into an empty folder."
        )
    meta = read_format_json(
        meta_path,
        FORMAT_NAME,
        DatasetError,
        "dataset description (format field)",
        "the dataset cannot be read: re-collect it.",
    )
    if meta.get("version") != FORMAT_VERSION:
        raise DatasetError(
            f"{meta_path} has format version {meta.get('version')!r}; this smt_rl reads version "
            f"{FORMAT_VERSION}. Re-collect the dataset with this version."
        )
    check_record(
        DatasetMeta,
        meta,
        meta_path,
        DatasetError,
        "it was edited or damaged: restore it, or re-collect the dataset.",
    )
    return meta


def check_dataset_folder(
    path: Path,
    env: Mapping[str, Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
) -> dict[str, Any] | None:
    """Check, reading only, that episodes of this task can go into ``path``: a new or empty folder
    (the folder lock's files aside), or a dataset of the same task (env id, kwargs, entry point)
    and spaces. Returns that dataset's ``meta.json`` (None for a new dataset).

    Raises:
        SpaceError: an unsupported space.
        DatasetError: ``path`` holds other files, or a dataset of another task or spaces.
    """
    check_space(observation_space, "observation_space")
    check_space(action_space, "action_space")
    if not (path / META_FILE).exists():
        if path.exists() and any(not is_lock_file(p) for p in path.iterdir()):
            raise DatasetError(
                f"--out {str(path)!r} exists, is not empty and is not a smt_rl dataset; "
                "choose a new or empty folder."
            )
        return None
    meta = read_meta(path)
    stored = meta["env"]
    if stored != dict(env):
        raise DatasetError(
            f"dataset {str(path)!r} holds task {stored}; refusing to append episodes of "
            f"{dict(env)}. Collect into another --out folder (or use the same env id and kwargs)."
        )
    for field, space in (("observation_space", observation_space), ("action_space", action_space)):
        mine = space_to_dict(space)
        if meta[field] != mine:
            raise DatasetError(
                f"dataset {str(path)!r} was collected with {field} {meta[field]}, "
                f"the environment now has {mine}; collect into another --out folder."
            )
    return meta


class TrajectoryWriter:
    """Creates a dataset folder, or opens an existing one to append to it.

    Appending is refused (with :class:`DatasetError`) when the folder holds another task (env id,
    kwargs or entry point) or other observation/action spaces. Each :meth:`write_chunk` is atomic:
    the chunk is written to a temporary folder, renamed into place, and only then listed in
    ``meta.json`` (itself replaced atomically), so a killed collection loses at most the chunk in
    flight and never corrupts what was already written.

    Args:
        path: dataset folder (created if missing; must be empty or an existing dataset).
        env: task identity from :func:`env_description`.
        observation_space: single-environment observation space (checked as supported).
        action_space: single-environment action space (checked as supported).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        env: Mapping[str, Any],
        observation_space: spaces.Space,
        action_space: spaces.Space,
    ) -> None:
        self.path = Path(path)
        existing = check_dataset_folder(self.path, env, observation_space, action_space)
        #: True when this writer created the dataset (``made_folder``: the folder too).
        self.created = existing is None
        self.made_folder = not self.path.exists()
        self._meta_before: bytes | None = None  # meta.json as it was before begin_collection
        if existing is not None:
            self.meta = existing
            self._remove_unlisted_chunks()
        else:
            self.meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "env": dict(env),
                "observation_space": space_to_dict(observation_space),
                "action_space": space_to_dict(action_space),
                "num_episodes": 0,
                "num_steps": 0,
                "chunks": [],
                "collections": [],
            }
            (self.path / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path / META_FILE, self.meta)

    def _remove_unlisted_chunks(self) -> None:
        listed = {c["name"] for c in self.meta["chunks"]}
        chunk_root = self.path / CHUNK_DIR
        if chunk_root.is_dir():
            for entry in chunk_root.iterdir():
                if entry.name not in listed:
                    shutil.rmtree(entry, ignore_errors=True)

    def begin_collection(self, record: Mapping[str, Any]) -> None:
        """Log the start of a collection run (policy, seed, ...); chunk writes update its counts."""
        self._meta_before = (self.path / META_FILE).read_bytes()
        entry = {**record, "episodes": 0, "steps": 0, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.meta["collections"].append(entry)
        atomic_write_json(self.path / META_FILE, self.meta)

    def write_chunk(
        self,
        steps: TensorDict,
        lengths: Sequence[int],
        returns: Sequence[float],
        successes: Sequence[bool] | None,
    ) -> None:
        """Append one chunk: ``steps`` (batch ``(S,)``) holds ``len(lengths)`` whole episodes."""
        total = int(sum(lengths))
        if steps.batch_size != (total,) or min(lengths, default=1) < 1:
            raise DatasetError(
                f"chunk of {steps.batch_size} steps does not hold episodes of lengths {lengths}"
            )
        chunks = self.meta["chunks"]
        name = chunk_name(chunk_index(chunks[-1]["name"]) + 1 if chunks else 0)
        tmp = self.path / CHUNK_DIR / f".tmp-{uuid.uuid4().hex}"
        steps.memmap(prefix=str(tmp), num_threads=0)
        os.replace(tmp, self.path / CHUNK_DIR / name)
        kill_point("data.chunk")
        self.meta["chunks"].append(
            {
                "name": name,
                "episodes": len(lengths),
                "steps": total,
                "lengths": [int(x) for x in lengths],
                "returns": [float(x) for x in returns],
                "successes": None if successes is None else [bool(x) for x in successes],
            }
        )
        self.meta["num_episodes"] += len(lengths)
        self.meta["num_steps"] += total
        if self.meta["collections"]:
            self.meta["collections"][-1]["episodes"] += len(lengths)
            self.meta["collections"][-1]["steps"] += total
        atomic_write_json(self.path / META_FILE, self.meta)

    def drop_oldest(self, chunks: int) -> None:
        """Remove the ``chunks`` oldest chunks (a dataset bounded by a capacity): first from
        ``meta.json`` (the commit point), then their folders (a kill in between leaves unlisted
        folders, removed at the next open)."""
        dropped, self.meta["chunks"] = self.meta["chunks"][:chunks], self.meta["chunks"][chunks:]
        self.meta["num_episodes"] -= sum(c["episodes"] for c in dropped)
        self.meta["num_steps"] -= sum(c["steps"] for c in dropped)
        atomic_write_json(self.path / META_FILE, self.meta)
        for chunk in dropped:
            shutil.rmtree(self.path / CHUNK_DIR / chunk["name"], ignore_errors=True)

    def keep_first(self, chunks: int) -> None:
        """Forget the chunks listed after the first ``chunks`` (back to a resume state's)."""
        extra = self.meta["chunks"][chunks:]
        if not extra:
            return
        self.meta["chunks"] = self.meta["chunks"][:chunks]
        self.meta["num_episodes"] -= sum(c["episodes"] for c in extra)
        self.meta["num_steps"] -= sum(c["steps"] for c in extra)
        atomic_write_json(self.path / META_FILE, self.meta)
        self._remove_unlisted_chunks()

    def end_collection(self, wall_s: float) -> None:
        """Record the wall-clock of the current collection run."""
        if self.meta["collections"]:
            self.meta["collections"][-1]["wall_s"] = round(float(wall_s), 3)
            atomic_write_json(self.path / META_FILE, self.meta)

    def abort_collection(self) -> None:
        """Clean up after a collection run that failed (an error, an interrupt).

        Chunks it already wrote stay (they hold whole episodes). A temporary chunk in flight is
        removed. When it wrote no chunk, the folder goes back to what it was: its record is
        dropped from ``meta.json`` (restored byte for byte), and a dataset this writer created is
        removed again (the folder too, when the writer made it).
        """
        self._remove_unlisted_chunks()
        began = self._meta_before is not None
        if began and self.meta["collections"][-1]["episodes"] > 0:
            return  # this run wrote episodes: they stay, listed
        if self.created and not self.meta["chunks"]:
            (self.path / META_FILE).unlink(missing_ok=True)
            shutil.rmtree(self.path / CHUNK_DIR, ignore_errors=True)
            if self.made_folder and not any(self.path.iterdir()):
                self.path.rmdir()
            return
        if began:
            atomic_write_bytes(self.path / META_FILE, self._meta_before)
