"""Run a suite's runs as Ray tasks: on this machine (a local Ray) or on a cluster (its address).

One Ray task per (task, method, seed) run, each reserving the suite's ``threads`` CPUs (at least
one) and ``gpus_per_run`` GPUs; the task starts the same ``smt-rl train`` process as the local
runner (:func:`agents.bench.runner.run_all`) in the same working directory and appends to the same
``OUT/train.log``, so results, skipping of finished runs and resuming are exactly as there. On a
cluster every node needs the project installed at the same path and the suite's ``out`` folder on
a shared filesystem.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from agents.bench.runner import RunSpec, file_outcome, run_env, split_finished, start_logged
from smt_rl.extras import require


def _ray():
    """The ``ray`` module, or a clear error naming the extra that installs it."""
    return require("ray", "smt-rl benchmark --engine ray")


def _train(command: list[str], out: str, cwd: str, threads: int) -> tuple[int, int, float]:
    """Run one ``smt-rl train`` process (killed with its Ray worker), its output appended to
    ``OUT/train.log`` as the local runner does; returns ``(exit code, where this attempt's output
    begins, seconds)``."""
    began = time.perf_counter()
    # the command carries threads=T; OMP_NUM_THREADS follows it
    process, log_from = start_logged(command, Path(out), run_env(threads), cwd, " [ray]")
    return process.wait(), log_from, time.perf_counter() - began


def run_all_ray(
    specs: list[RunSpec],
    address: str | None = None,
    cpus: int | None = None,
    cpus_per_run: int = 1,
    gpus_per_run: float = 0.0,
    echo: Callable[[str], None] = print,
) -> dict[str, list[RunSpec]]:
    """Run the unfinished runs as Ray tasks; same report as :func:`run_all`.

    Args:
        address: a Ray cluster's address (``ray://HOST:10001`` or ``auto``); None: start a local
            Ray on this machine.
        cpus: CPUs of the local Ray (None: all of this machine's); ignored with ``address``.
        cpus_per_run: CPUs each run reserves (and its OpenMP threads).
        gpus_per_run: GPUs each run reserves.
    """
    ray = _ray()
    report, queue = split_finished(specs, echo)
    if not queue:
        return report
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": cpus}
        ray.init(**options, include_dashboard=False, log_to_driver=False)
    try:
        train = ray.remote(_train).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run)
        cwd = os.getcwd()
        pending = {}
        for spec in queue:
            ref = train.remote(spec.command, str(spec.out), cwd, cpus_per_run)
            pending[ref] = spec
            echo(f"queued   {spec.task} {spec.method} seed {spec.seed}")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            file_outcome(spec, *ray.get(done[0]), report, echo)
    except BaseException:
        if started_here:
            ray.shutdown()  # stops the local Ray and the runs it started
        raise
    if started_here:
        ray.shutdown()
    return report
