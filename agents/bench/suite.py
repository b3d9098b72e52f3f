"""Benchmark suites: which methods run on which tasks, with how many env steps, read from YAML.

A suite file (``configs/suites/NAME.yaml``)::

    name: memory_length
    out: runs/benchmarks/memory_length   # one folder per run: OUT/TASK/METHOD/seed_S
    seeds: 3
    methods: [smt_ppo, recurrent_ppo, gru_ppo, ppo]
    tasks:
      - name: tmaze_100
        config: configs/tmaze.yaml        # the task's train config (its per-algo sections)
        budget: 300000                    # env steps per run, the same for every method
        memory_length: 100                # x axis of the success-versus-memory-length plot
        overrides: [env.kwargs.length=100]
        method_overrides: {smt_ppo: [data.episodes=1000]}

Every run is ``smt-rl train CONFIG overrides... method_overrides... threads=T algo=METHOD seed=S
total_timesteps=BUDGET budget_includes_data=true out=...`` with ``OMP_NUM_THREADS=T`` (``T``: the
suite's ``threads``, or a task's own ``threads=`` override): the SMT agent's logged pretraining data
is paid from the same budget as the baselines' interaction.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agents.config import ALGOS, Algo
from smt_rl.config import ConfigModel, Count, NonNegative, NonNegativeInt, load_config
from smt_rl.errors import ConfigError

SUITES_DIR = Path("configs") / "suites"


class SuiteTask(ConfigModel):
    """One task of a suite."""

    name: str = Field("", description="label of the task in tables, plots and run folders")
    config: str = Field("", description="train config file of the task (relative to the cwd)")
    budget: Count = Field(
        100_000, description="env steps per run, every method (smt_ppo: logged data + RL)"
    )
    memory_length: int | None = Field(
        None, ge=0, description="steps between cue and use: x axis of the memory-length plot"
    )
    overrides: list[str] = Field(
        default_factory=list, description="key=value overrides applied to every method"
    )
    method_overrides: dict[Algo, list[str]] = Field(
        default_factory=dict, description="per method: key=value overrides of that method alone"
    )
    methods: list[Algo] | None = Field(
        None,
        description="the suite's methods run on this task (e.g. where a baseline cannot reach); "
        "null: all of them",
    )


class SuiteConfig(ConfigModel):
    """``smt-rl benchmark SUITE``: methods x tasks x seeds."""

    name: str = Field("", description="suite name (table titles)")
    out: str = Field("runs/benchmarks", description="root folder of the runs and results")
    seeds: Count = Field(3, description="seeds 0 .. seeds-1 per (task, method)")
    methods: list[Algo] = Field(
        default_factory=lambda: list(ALGOS), min_length=1, description="algos to compare"
    )
    tasks: list[SuiteTask] = Field(default_factory=list, description="the tasks")
    threads: NonNegativeInt = Field(
        1,
        description="torch threads of each run (its `threads` key and OMP_NUM_THREADS; a task's "
        "`threads=N` override wins; the CPUs Ray reserves per trial); 0: torch's default",
    )
    gpus_per_run: NonNegative = Field(
        0.0, description="GPUs Ray reserves per trial (fractions share a GPU); 0: none"
    )


def suite_path(suite: str) -> Path:
    """A suite file from a path, or from a name under ``configs/suites``."""
    path = Path(suite)
    if path.is_file():
        return path
    named = SUITES_DIR / f"{suite}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []
    raise ConfigError(
        f"suite {suite!r} is neither a file nor a name under {SUITES_DIR}/ (known: "
        f"{', '.join(known) or 'none'}); run from the repository root or pass the file's path."
    )


def load_suite(suite: str, overrides: list[str] | tuple[str, ...] = ()) -> SuiteConfig:
    """Read and check a suite: known methods, unique task names, existing config files."""
    cfg = load_config(SuiteConfig, suite_path(suite), list(overrides))
    if not cfg.tasks:
        raise ConfigError(f"suite {suite!r}: `tasks` is empty; list at least one task.")
    names = [t.name for t in cfg.tasks]
    for i, task in enumerate(cfg.tasks):
        where = f"suite {suite!r}: tasks[{i}]"
        if not task.name or task.name in names[:i] or "/" in task.name:
            raise ConfigError(f"{where}.name {task.name!r} must be unique, non-empty, without '/'.")
        if not Path(task.config).is_file():
            raise ConfigError(
                f"{where}.config {task.config!r} is not a file (paths are relative "
                "to the working directory: run from the repository root)."
            )
    return cfg
