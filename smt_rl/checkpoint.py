"""Checkpoints: weights as safetensors plus a JSON description; never executes code on load.

A checkpoint folder holds ``model.safetensors`` and ``checkpoint.json``. Both are written
atomically, weights first; the JSON is the commit point, so a killed save leaves the previous
checkpoint readable or none at all, and a weights file that does not match its JSON (truncated,
swapped) is refused with a clear error.

Every kind (the SMT model of a pretraining, each agent) is written by :func:`write_checkpoint`
and read by :func:`open_checkpoint`, so they share one description:

- ``kind``: what wrote it (``smt_model``, ``smt_ppo_agent``, ``gru_ppo_agent``, ...);
- ``config``: the run's whole config (its ``model`` section sizes any SMT memory inside);
- ``observation_space`` / ``action_space``: the task's spaces;
- ``modules``: the top-level parts of the saved module (every tensor name starts with one);
- ``memory_prefix``: where an SMT model's tensors sit (``""`` or ``"smt."``), when it holds one;
- ``weights_sha256`` and ``format``, plus what the writer adds (``num_timesteps``, ...).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from smt_rl.errors import ConfigError, SmtRlError
from smt_rl.faults import kill_point
from smt_rl.io import atomic_write_bytes, atomic_write_json, read_format_json
from smt_rl.records import NonNegativeInt, Record, SpaceDescription, check_record
from smt_rl.spaces import space_from_dict, space_to_dict

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "checkpoint.json"
FORMAT = "smt_rl.checkpoint"


# what to do about a description that was edited, damaged or written by another version
SPEC_FIX = (
    "it was edited or written by another smt_rl version: re-run the training (or restore the file)."
)


class CheckpointError(SmtRlError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


class CheckpointSpec(Record):
    """The fields of ``checkpoint.json`` (see the module notes), checked when it is read; writers
    add their own (``method``, ``env``, ...). ``format``, ``kind`` and ``weights_sha256`` must be
    there; the others must have their type when there, and a loader that needs one that is not
    refuses it then (:func:`spec_fields`), after the kind check, which says more. The config's
    contents are checked when it is built."""

    format: str
    kind: str
    weights_sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
    config: dict[str, Any] = Field(default=None)  # None only when absent (not validated)
    observation_space: SpaceDescription = Field(default=None)
    action_space: SpaceDescription = Field(default=None)
    modules: list[str] = Field(default=None)
    memory_prefix: str | None = None
    num_timesteps: NonNegativeInt = 0


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``checkpoint.json`` at ``path``, format and fields checked.

    Raises:
        CheckpointError: corrupt JSON, not a checkpoint description, or a field missing or of the
            wrong type (named).
    """
    spec = read_format_json(
        Path(path), FORMAT, CheckpointError, "checkpoint description", "re-run the training."
    )
    check_record(CheckpointSpec, spec, path, CheckpointError, SPEC_FIX)
    return spec


def save_checkpoint(folder: str | os.PathLike, module: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``module``'s weights and the description ``spec`` (JSON-ready) into ``folder``."""
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    data = save_safetensors(tensors)
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    kill_point("checkpoint.weights")
    atomic_write_json(
        folder / SPEC_FILE,
        {"format": FORMAT, **spec, "weights_sha256": hashlib.sha256(data).hexdigest()},
    )
    return folder


def read_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a checkpoint folder: ``(spec, tensors)``; clear errors when it is not one."""
    folder = Path(folder)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if folder.is_file():
        raise CheckpointError(
            f"checkpoint {str(folder)!r} is a file; pass the folder holding {SPEC_FILE} and "
            f"{WEIGHTS_FILE} (e.g. RUN_DIR/checkpoint). Pickled torch files are never loaded."
        )
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {str(folder)!r} does not exist; check the path.")
    if not spec_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a smt_rl checkpoint: it needs {SPEC_FILE} and {WEIGHTS_FILE} "
            "(written by `smt-rl pretrain` / `train`). Pickled torch files are never loaded."
        )
    spec = read_spec(spec_path)
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != spec["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path} does not match {SPEC_FILE} (truncated, corrupt or replaced); "
            "re-run the training or restore the file."
        )
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is not a valid safetensors file: {exc}") from exc
    return spec, tensors


@contextmanager
def spec_fields(folder: str | os.PathLike) -> Iterator[None]:
    """Reading the fields of ``folder``'s checkpoint description: a missing field or config
    section, or a config this version cannot build, becomes a :class:`CheckpointError` naming the
    file."""
    try:
        yield
    except (KeyError, TypeError, ConfigError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CheckpointError(
            f"{Path(folder) / SPEC_FILE} is incomplete or invalid ({detail}); {SPEC_FIX}"
        ) from exc


@contextmanager
def resume_state_fits(path: str | os.PathLike, fix: str) -> Iterator[None]:
    """Loading a resume state (read from ``path``) into a run's objects: a state that does not
    fit them (tensor shapes, optimiser groups, missing entries) becomes a
    :class:`CheckpointError` naming the file and ``fix``."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} does not fit this run ({type(exc).__name__}: {exc}); {fix}"
        ) from exc


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``module`` exactly: missing, unexpected or mis-shaped tensors raise
    :class:`CheckpointError` (the checkpoint comes from another architecture or config)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong:
            details.append(
                "shape mismatch "
                + ", ".join(
                    f"{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]
                )
            )
        raise CheckpointError(
            f"checkpoint {source} does not fit this model ({'; '.join(details)}): it was saved "
            "from another architecture or config; load it with the config it was saved with."
        )
    module.load_state_dict(tensors)


def write_checkpoint(
    folder: str | os.PathLike,
    module: nn.Module,
    *,
    kind: str,
    config: dict[str, Any],
    observation_space: Any,
    action_space: Any,
    memory_prefix: str | None = None,
    **extra: Any,
) -> Path:
    """Write ``module`` as a checkpoint of ``kind`` (see the module notes for the description).

    Args:
        config: the run's config as plain data (``smt_rl.config.config_to_dict``).
        memory_prefix: where the SMT model's tensors sit in ``module``'s state dict, when it
            holds one (a pretrained memory can then be loaded from it).
        extra: more JSON-ready fields (``num_timesteps``, ``method``, ...).
    """
    spec = {
        "kind": kind,
        "config": config,
        "observation_space": space_to_dict(observation_space),
        "action_space": space_to_dict(action_space),
        "modules": [name for name, _ in module.named_children()],
        **({} if memory_prefix is None else {"memory_prefix": memory_prefix}),
        **extra,
    }
    return save_checkpoint(folder, module, spec)


@dataclass
class Checkpoint:
    """A checkpoint folder, read and verified: its description and its tensors."""

    folder: Path
    spec: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def num_timesteps(self) -> int:
        return self.spec.get("num_timesteps", 0)

    def config(self, cls: type, *path: str) -> Any:
        """The stored config (or its section at ``path``) as ``cls``; keys an earlier version
        wrote are migrated, anything else wrong is a :class:`CheckpointError` naming the file."""
        from smt_rl.config import config_from_dict

        with spec_fields(self.folder):
            data = self.spec["config"]
            for key in path:
                data = data[key]
            return config_from_dict(cls, data, migrate=True)

    def spaces(self) -> tuple[Any, Any]:
        """``(observation_space, action_space)`` of the task (checked buildable when read)."""
        with spec_fields(self.folder):
            return (
                space_from_dict(self.spec["observation_space"]),
                space_from_dict(self.spec["action_space"]),
            )

    def load_into(self, module: nn.Module, prefix: str = "") -> None:
        """Load the tensors under ``prefix`` (prefix removed) into ``module``, exactly."""
        tensors = self.tensors
        if prefix:
            tensors = {
                k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)
            }
        load_weights(module, tensors, str(self.folder))

    def check_known_tensors(self) -> None:
        """Refuse tensors outside the modules the description lists (an altered file)."""
        with spec_fields(self.folder):
            modules = tuple(f"{name}." for name in self.spec["modules"])
        unexpected = sorted(k for k in self.tensors if not k.startswith(modules))
        if unexpected:
            raise CheckpointError(
                f"checkpoint {self.folder} does not fit a {self.kind!r} checkpoint (unexpected "
                f"{unexpected[:5]}): it was saved from another architecture or altered; re-run "
                "the training."
            )


def open_checkpoint(folder: str | os.PathLike, kinds: Collection[str] | None = None) -> Checkpoint:
    """Read and verify a checkpoint folder; with ``kinds``, refuse any other kind.

    Raises:
        CheckpointError: not a checkpoint folder, corrupt, or of another kind.
    """
    spec, tensors = read_checkpoint(folder)
    checkpoint = Checkpoint(Path(folder), spec, tensors)
    if kinds is not None and checkpoint.kind not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise CheckpointError(
            f"{folder} holds a {checkpoint.kind!r} checkpoint, not a {wanted} one; load it with "
            "the class of its kind (agents.load_agent picks it by its kind)."
        )
    return checkpoint
