"""Run a suite's methods x tasks x seeds as separate ``smt-rl train`` processes, at most ``jobs``
at once; runs that already wrote ``summary.json`` are skipped, so a killed benchmark resumes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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
    threads: int = 1  # its `threads` key, also its OMP_NUM_THREADS (0: torch's default)

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
                if task.methods is not None and method not in task.methods:
                    continue
                out = run_folder(suite.out, task.name, method, seed)
                threads = _threads(task, method, suite.threads)
                command = _command(task, method, seed, out, threads)
                specs.append(RunSpec(task.name, method, seed, out, command, threads))
    return specs


def _threads(task: SuiteTask, method: str, default: int) -> int:
    """A run's torch threads: the last ``threads=N`` of its task's overrides, else the suite's."""
    threads = default
    for override in [*task.overrides, *task.method_overrides.get(method, [])]:
        key, _, value = override.partition("=")
        if key.strip() == "threads" and value.strip().isdigit():  # else the run rejects it
            threads = int(value)
    return threads


def _command(task: SuiteTask, method: str, seed: int, out: Path, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agents",
        "train",
        task.config,
        *task.overrides,
        *task.method_overrides.get(method, []),
        f"threads={threads}",
        f"algo={method}",
        f"seed={seed}",
        f"total_timesteps={task.budget}",
        "budget_includes_data=true",
        f"out={out}",
        "--no-progress",
    ]


@dataclass
class Child:
    """A run's ``smt-rl train`` process while it runs."""

    spec: RunSpec  # the run
    process: subprocess.Popen  # its process (leader of its own process group)
    began: float  # time.perf_counter() at its start
    log_from: int  # where its output begins in OUT/train.log (earlier attempts stay above)


def run_all(specs: list[RunSpec], jobs: int = 1, echo=print) -> dict[str, list[RunSpec]]:
    """Start the unfinished runs, ``jobs`` at a time; each appends to ``OUT/train.log``.

    Each run dies with this process, however it ends (SIGKILL included; on Linux), and is killed
    (with its process group) when this function is left by an exception or an interrupt. A run
    whose folder another process still writes to fails with that process named (its lock).

    Returns ``{"skipped": [...], "finished": [...], "failed": [...]}``. A failed run is reported
    (with the tail of its log) and the others go on; running the benchmark again retries it.
    """
    report, queue = split_finished(specs, echo)
    running: list[Child] = []
    try:
        while queue or running:
            while queue and len(running) < max(1, jobs):
                spec = queue.pop(0)
                running.append(_start(spec, run_env(spec.threads)))
                echo(f"started  {spec.task} {spec.method} seed {spec.seed}")
            time.sleep(0.5)
            for child in [c for c in running if c.process.poll() is not None]:
                running.remove(child)
                took = time.perf_counter() - child.began
                file_outcome(
                    child.spec, child.process.returncode, child.log_from, took, report, echo
                )
    except BaseException:
        for child in running:
            _kill(child.process)
        raise
    return report


def run_env(threads: int) -> dict[str, str]:
    """A run's environment: this one, with ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to
    its ``threads`` (0: left as they are, torch's default)."""
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _start(spec: RunSpec, env: dict[str, str]) -> Child:
    """Start ``spec``'s process (see :func:`start_logged`)."""
    process, log_from = start_logged(spec.command, spec.out, env)
    return Child(spec, process, time.perf_counter(), log_from)


def start_logged(
    command: list[str], out: Path, env: dict[str, str], cwd: str | None = None, tag: str = ""
) -> tuple[subprocess.Popen, int]:
    """Start ``command``, its output appended to ``OUT/train.log`` after a header line (with
    ``tag`` after the time; appending: a process that still writes there keeps its log);
    returns the process and where this attempt's output begins in the log."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "a") as log:
        separator = "\n" if log.tell() else ""  # a killed attempt may end mid-line
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"{separator}--- {started}{tag} {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=dies_with_parent(),
        )
        return process, log.tell()


def split_finished(
    specs: list[RunSpec], echo: Callable[[str], None]
) -> tuple[dict[str, list[RunSpec]], list[RunSpec]]:
    """``(report, queue)``: a report whose ``skipped`` holds the runs already finished (said
    through ``echo``) and the runs still to start, in order."""
    report: dict[str, list[RunSpec]] = {"skipped": [], "finished": [], "failed": []}
    queue = []
    for spec in specs:
        (report["skipped"] if spec.finished else queue).append(spec)
    if report["skipped"]:
        echo(f"{len(report['skipped'])} runs already finished: skipped")
    return report, queue


def file_outcome(
    spec: RunSpec,
    returncode: int,
    log_from: int,
    took: float,
    report: dict[str, list[RunSpec]],
    echo: Callable[[str], None],
) -> None:
    """File a run that ended as finished or failed (with the tail of its attempt's log, which
    begins at ``log_from`` in ``OUT/train.log``)."""
    if returncode == 0 and spec.finished:
        report["finished"].append(spec)
        echo(f"finished {spec.task} {spec.method} seed {spec.seed} ({took:.0f} s)")
        return
    report["failed"].append(spec)
    echo(
        f"FAILED   {spec.task} {spec.method} seed {spec.seed} "
        f"(exit {returncode}); {spec.out / 'train.log'} ends:\n{tail_of_log(spec.out, log_from)}"
    )


def tail_of_log(out: Path, log_from: int, chars: int = 800) -> str:
    """The last ``chars`` characters a run's attempt wrote to ``OUT/train.log`` from offset
    ``log_from`` (earlier attempts excluded)."""
    with open(out / "train.log", "rb") as log:
        log.seek(log_from)
        return log.read().decode(errors="replace").strip()[-chars:]


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL a run's whole process group (its environment workers too) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (Linux)


def dies_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes a child the leader of its own process group (Ctrl-C reaches
    the runner, which kills the group) and, on Linux, SIGKILLed when this process dies."""
    parent = os.getpid()
    prctl = _prctl()  # looked up here: the forked child only calls it

    def setup() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the request took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (None off Linux, or without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
