"""Run a suite's methods x tasks x seeds as separate ``smt-rl train`` processes, at most ``jobs``
at once; runs that already wrote ``summary.json`` are skipped, so a killed benchmark resumes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agents.bench.suite import SuiteConfig, SuiteTask


@dataclass
class RunSpec:
    """One training run of a suite."""

    task: str  # task name
    method: str  # algo
    seed: int  # seed
    out: Path  # run folder
    command: list[str]  # the process to start

    @property
    def finished(self) -> bool:
        """True when the run wrote its summary (the last thing ``smt-rl train`` does)."""
        return (self.out / "summary.json").is_file()


def run_folder(root: str | os.PathLike, task: str, method: str, seed: int) -> Path:
    """``ROOT/TASK/METHOD/seed_S``."""
    return Path(root) / task / method / f"seed_{seed}"


def run_specs(suite: SuiteConfig, seeds: int | None = None) -> list[RunSpec]:
    """Every run of ``suite`` (seeds ``0 .. seeds-1``; default the suite's own), seed-major so
    that a partial benchmark has every method on every task for the first seeds."""
    specs = []
    for seed in range(seeds or suite.seeds):
        for task in suite.tasks:
            for method in suite.methods:
                out = run_folder(suite.out, task.name, method, seed)
                specs.append(
                    RunSpec(task.name, method, seed, out, _command(task, method, seed, out))
                )
    return specs


def _command(task: SuiteTask, method: str, seed: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agents",
        "train",
        task.config,
        *task.overrides,
        *task.method_overrides.get(method, []),
        f"algo={method}",
        f"seed={seed}",
        f"total_timesteps={task.budget}",
        "budget_includes_data=true",
        f"out={out}",
        "--no-progress",
    ]


def run_all(specs: list[RunSpec], jobs: int = 1, echo=print) -> dict[str, list[RunSpec]]:
    """Start the unfinished runs, ``jobs`` at a time; each writes ``OUT/train.log``.

    Returns ``{"skipped": [...], "finished": [...], "failed": [...]}``. A failed run is reported
    (with the tail of its log) and the others go on; running the benchmark again retries it.
    """
    report: dict[str, list[RunSpec]] = {"skipped": [], "finished": [], "failed": []}
    queue = []
    for spec in specs:
        (report["skipped"] if spec.finished else queue).append(spec)
    if report["skipped"]:
        echo(f"{len(report['skipped'])} runs already finished: skipped")
    running: list[tuple[RunSpec, subprocess.Popen, float]] = []
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # J processes share the cores
    while queue or running:
        while queue and len(running) < max(1, jobs):
            spec = queue.pop(0)
            spec.out.mkdir(parents=True, exist_ok=True)
            log = open(spec.out / "train.log", "w")  # noqa: SIM115 (closed when the run ends)
            proc = subprocess.Popen(spec.command, stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            running.append((spec, proc, time.perf_counter()))
            echo(f"started  {spec.task} {spec.method} seed {spec.seed}")
        time.sleep(0.5)
        for item in list(running):
            spec, proc, began = item
            if proc.poll() is None:
                continue
            running.remove(item)
            took = time.perf_counter() - began
            if proc.returncode == 0 and spec.finished:
                report["finished"].append(spec)
                echo(f"finished {spec.task} {spec.method} seed {spec.seed} ({took:.0f} s)")
            else:
                report["failed"].append(spec)
                tail = (spec.out / "train.log").read_text(errors="replace").strip()[-800:]
                echo(
                    f"FAILED   {spec.task} {spec.method} seed {spec.seed} "
                    f"(exit {proc.returncode}); {spec.out / 'train.log'} ends:\n{tail}"
                )
    return report
