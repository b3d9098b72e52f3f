"""PNG plots of benchmark results: return versus env steps and versus wall-clock per task, and
success versus memory length (matplotlib, no display needed; the optional extra
``smt-rl[plots]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agents.bench.results import RunRecord
from smt_rl.extras import require

CURVE_KEY = "rollout/return_mean"  # training-time return of the last 100 finished episodes


def _pyplot():
    """matplotlib's pyplot on the Agg backend.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'smt-rl[plots]'``).
    """
    require("matplotlib", "benchmark plots").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _xy(record: RunRecord, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's curve: x in env steps (logged data included, so the SMT agent starts where its
    pretraining data ends) or in wall-clock seconds since the run started (pretraining
    included); y the training return. NaN points (no finished episode yet) are dropped."""
    offset = int(record.summary.get("pretrain_env_steps") or 0)
    xs, ys = [], []
    for row in record.curve:
        y = row.get(CURVE_KEY)
        x = row["step"] + offset if axis == "steps" else row.get("time/wall_s")
        if y is None or x is None or y != y:
            continue
        xs.append(float(x))
        ys.append(float(y))
    return np.asarray(xs), np.asarray(ys)


def plot_curves(records: list[RunRecord], folder: str | os.PathLike) -> list[Path]:
    """``return_vs_steps_TASK.png`` and ``return_vs_wall_TASK.png`` for every task: one line per
    method (mean over seeds on a common grid), thin lines per seed.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'smt-rl[plots]'``).
    """
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tasks: dict[str, list[RunRecord]] = {}
    for record in records:
        tasks.setdefault(record.task, []).append(record)
    for task, runs in tasks.items():
        for axis, label in (
            ("steps", "env steps (logged data included)"),
            ("wall", "wall-clock s"),
        ):
            fig, ax = plt.subplots(figsize=(6, 4))
            methods: dict[str, list[RunRecord]] = {}
            for run in runs:
                methods.setdefault(run.method, []).append(run)
            for i, (method, method_runs) in enumerate(sorted(methods.items())):
                color = f"C{i}"
                curves = [_xy(r, axis) for r in method_runs]
                curves = [(x, y) for x, y in curves if x.size]
                if not curves:
                    continue
                for x, y in curves:
                    ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
                start = max(x[0] for x, _ in curves)
                end = min(x[-1] for x, _ in curves)
                if end > start:
                    grid = np.linspace(start, end, 100)
                    mean = np.mean([np.interp(grid, x, y) for x, y in curves], 0)
                    ax.plot(grid, mean, color=color, label=f"{method} ({len(curves)} seeds)")
                else:
                    ax.plot([], [], color=color, label=f"{method} ({len(curves)} seeds)")
            ax.set_xlabel(label)
            ax.set_ylabel("training return (last 100 episodes)")
            ax.set_title(task, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            path = folder / f"return_vs_{axis}_{_safe(task)}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def plot_success_vs_memory(
    rows: list[dict[str, Any]], memory_length: dict[str, int], folder: str | os.PathLike
) -> Path | None:
    """``success_vs_memory_length.png``: eval success (mean, 95% CI bars) against the tasks'
    memory lengths, one line per method; None when no task has a memory length.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'smt-rl[plots]'``).
    """
    points = [r for r in rows if r["task"] in memory_length and r["success"] is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, method in enumerate(sorted({r["method"] for r in points})):
        mine = sorted((memory_length[r["task"]], r) for r in points if r["method"] == method)
        x = [length for length, _ in mine]
        y = np.array([r["success"]["mean"] for _, r in mine])
        low = np.array([r["success"]["ci95"][0] for _, r in mine])
        high = np.array([r["success"]["ci95"][1] for _, r in mine])
        ax.errorbar(
            x, y, yerr=[y - low, high - y], color=f"C{i}", marker="o", capsize=3, label=method
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("memory length (steps between cue and use)")
    ax.set_ylabel("eval success rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(folder) / "success_vs_memory_length.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
