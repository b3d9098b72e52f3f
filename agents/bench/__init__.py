"""The benchmark harness: suites of methods x tasks x seeds, run as processes, summarised as
tables (mean and 95% bootstrap CI over seeds) and plots.

``smt-rl benchmark SUITE`` and ``smt-rl compare RUN_DIR...``; see :mod:`agents.bench.suite`."""

from __future__ import annotations

from agents.bench.results import RunRecord, aggregate, markdown_table, read_run, write_results
from agents.bench.runner import RunSpec, run_all, run_specs
from agents.bench.suite import SuiteConfig, SuiteTask, load_suite

__all__ = [
    "RunRecord",
    "RunSpec",
    "SuiteConfig",
    "SuiteTask",
    "aggregate",
    "load_suite",
    "markdown_table",
    "read_run",
    "run_all",
    "run_specs",
    "write_results",
]
