"""Device selection, CPU threads and mixed precision: CUDA when present, bf16 autocast on CUDA
only."""

from __future__ import annotations

import contextlib

import torch

from smt_rl.errors import ConfigError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; a device name is checked and returned
    as a ``torch.device``; a ``torch.device`` is returned as it is."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(
            f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N."
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name!r} asked for, but CUDA is not available; use device=auto."
        )
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU trains in plain fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int) -> None:
    """The config key ``threads``: ``torch.set_num_threads(threads)`` for this process, and the
    inter-op threads too while torch still allows it (before its first inter-op work); 0 leaves
    torch's default (``OMP_NUM_THREADS``, else one thread per core).

    The ``smt-rl`` command calls it once, at its start; :func:`agents.pipeline.train` does not
    (a library call leaves the caller's process settings alone).

    Raises:
        ConfigError: ``threads`` is negative.
    """
    if type(threads) is not int or threads < 0:
        raise ConfigError(
            f"threads: {threads!r} is not a thread count; give 1 or more, or 0 for torch's default."
        )
    if threads == 0:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # inter-op work already started: keep torch's count
        torch.set_num_interop_threads(threads)
