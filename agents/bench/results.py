"""Results of finished runs: per (task, method), mean and 95% bootstrap confidence interval over
seeds, written as a markdown table and JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from smt_rl.errors import SmtRlError


class ResultsError(SmtRlError, ValueError):
    """A run folder holds no finished run, or its files are unreadable."""


@dataclass
class RunRecord:
    """One finished run, read back from its folder."""

    folder: Path  # the run folder
    task: str  # task label
    method: str  # algo
    seed: int  # seed
    summary: dict[str, Any]  # summary.json
    curve: list[dict[str, float]] = field(default_factory=list)  # RL metric lines

    @property
    def total_env_steps(self) -> int:
        """Env steps the run consumed: RL steps plus logged pretraining data (smt_ppo)."""
        return int(self.summary.get("env_steps", 0)) + int(
            self.summary.get("pretrain_env_steps") or 0
        )


def task_label(config: dict[str, Any]) -> str:
    """``env.id`` plus its kwargs, e.g. ``smt_rl/PassiveTMaze-v0(length=100)``."""
    env = config.get("env", {})
    kwargs = env.get("kwargs") or {}
    args = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"{env.get('id')}({args})" if args else str(env.get("id"))


def read_run(folder: str | os.PathLike, task: str | None = None) -> RunRecord:
    """A finished run folder (``summary.json`` + ``config.yaml``; curves from ``metrics.jsonl``).

    Raises:
        ResultsError: no summary (the run is not finished) or unreadable files.
    """
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text())
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except FileNotFoundError as exc:
        raise ResultsError(
            f"{folder} is not a finished run (no {Path(exc.filename).name}); pass folders that "
            "`smt-rl train` completed."
        ) from exc
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ResultsError(f"{folder}: unreadable run files ({exc}).") from exc
    curve = []
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if row.get("phase") == "rl":
                curve.append(row)
    return RunRecord(
        folder,
        task or task_label(config),
        str(summary.get("algo", config.get("algo"))),
        int(summary.get("seed", config.get("seed", 0))),
        summary,
        curve,
    )


SUCCESS_THRESHOLD = 0.9  # training success rate that counts as "reached" in the wall-clock column


def time_to_success(record: RunRecord, threshold: float = SUCCESS_THRESHOLD) -> float | None:
    """Wall-clock seconds (from the run's start, pretraining included) at which the training
    success rate over the last 100 episodes first reached ``threshold``; None if it never did or
    the task reports no success."""
    for row in record.curve:
        value = row.get("rollout/success_rate")
        if value is not None and value >= threshold and row.get("time/wall_s") is not None:
            return float(row["time/wall_s"])
    return None


def bootstrap_ci(
    values: list[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (one value: itself)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def _stat(values: list[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    low, high = bootstrap_ci(values)
    return {"mean": float(np.mean(values)), "ci95": [low, high], "values": values}


def aggregate(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per (task, method), in first-seen order: seeds, success and return (mean, 95% CI,
    per-seed values), env steps (RL + logged data) and wall-clock."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.task, record.method), []).append(record)
    rows = []
    for (task, method), runs in groups.items():
        runs = sorted(runs, key=lambda r: r.seed)
        rows.append(
            {
                "task": task,
                "method": method,
                "seeds": [r.seed for r in runs],
                "success": _stat([r.summary.get("eval/success_rate") for r in runs]),
                "return": _stat([r.summary.get("eval/return_mean") for r in runs]),
                "env_steps": float(np.mean([r.total_env_steps for r in runs])),
                "wall_s": float(np.mean([r.summary.get("wall_s", float("nan")) for r in runs])),
                "time_to_success": [time_to_success(r) for r in runs],
                "runs": [str(r.folder) for r in runs],
            }
        )
    return rows


def _cell(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "-"
    low, high = stat["ci95"]
    return f"{stat['mean']:.2f} [{low:.2f}, {high:.2f}]"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def markdown_table(rows: list[dict[str, Any]], title: str | None = None) -> str:
    """The rows as a markdown table (mean [95% bootstrap CI] over seeds)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| task | method | seeds | success | return | env steps | wall-clock (mean) "
        f"| training success >= {SUCCESS_THRESHOLD} after (mean of seeds that got there) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reached = [t for t in row.get("time_to_success", []) if t is not None]
        if row["success"] is None and not reached:  # no success signal (POPGym)
            when = "- (no success signal)"
        elif reached:
            when = f"{len(reached)}/{len(row['seeds'])} seeds, {_duration(float(np.mean(reached)))}"
        else:
            when = f"0/{len(row['seeds'])} seeds"
        lines.append(
            f"| {row['task']} | {row['method']} | {len(row['seeds'])} | {_cell(row['success'])} | "
            f"{_cell(row['return'])} | {row['env_steps']:,.0f} | {_duration(row['wall_s'])} "
            f"| {when} |"
        )
    lines.append("")
    lines.append("success / return: mean over seeds [95% bootstrap confidence interval]; env steps")
    lines.append("include the logged pretraining data of smt_ppo; wall-clock includes its data")
    lines.append("collection and pretraining.")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]], folder: str | os.PathLike, title: str) -> Path:
    """``results.md`` and ``results.json`` in ``folder``; returns the markdown path."""
    from smt_rl.io import atomic_write_bytes, atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "results.json", {"title": title, "rows": rows})
    path = folder / "results.md"
    atomic_write_bytes(path, markdown_table(rows, title).encode())
    return path
