"""The pipeline steps as Python functions, one per CLI command, with the same arguments."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.config import TrainConfig
from agents.probes import probe_for
from agents.registry import ALGORITHMS, agent_class, algo_of_kind, check_installed
from agents.smt_ppo.loop import RESUME_FIX
from envs import make_env
from smt_rl import distributed
from smt_rl.checkpoint import SPEC_FILE, CheckpointError, read_spec, spec_fields
from smt_rl.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from smt_rl.data import (
    BehaviourPolicy,
    CollectionResult,
    TrajectoryDataset,
    collect_episodes,
    env_description,
)
from smt_rl.data.writer import check_dataset_folder
from smt_rl.errors import ConfigError, DatasetError, MissingExtraError
from smt_rl.io import atomic_write_json
from smt_rl.locks import FolderLock
from smt_rl.records import NonNegativeInt, Record, check_record
from smt_rl.smt.config import PretrainConfig
from smt_rl.smt.model import check_model_fits
from smt_rl.smt.trainer import PRETRAIN_SECTIONS, load_resume_state, pretrain_on_dataset
from smt_rl.tree_file import load_tree


def collect(
    env_id: str | None,
    episodes: int,
    out: str | os.PathLike,
    policy: str | BehaviourPolicy = "random",
    num_envs: int = 1,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    entry_point: str | None = None,
    vectorization: str = "sync",
    progress: bool = True,
) -> CollectionResult:
    """Log ``episodes`` whole episodes of a behaviour policy into the dataset folder ``out``.

    Same as ``smt-rl collect ENV_ID --episodes N --out DIR ...``.

    Args:
        env_id: a registered gymnasium id (e.g. ``smt_rl/PassiveTMaze-v0``,
            ``MiniGrid-MemoryS7-v0``, ``popgym-RepeatFirstEasy-v0``), or a name for
            ``entry_point``.
        episodes: complete episodes to write.
        out: dataset folder; created, or appended to when it holds the same task and spaces.
        policy: ``"random"``, or a :class:`smt_rl.data.BehaviourPolicy` object.
        num_envs: environments stepped together.
        seed: environment i is reset with ``seed + i``; the random policy is seeded with it.
        env_kwargs: keyword arguments of the environment (e.g. ``{"length": 50}``).
        entry_point: ``"package.module:Class"`` of your own gymnasium environment.
        vectorization: ``"sync"`` (in-process) or ``"async"`` (a worker process per env).
        progress: show a progress bar.
    """
    env_kwargs = dict(env_kwargs or {})
    env_fn = functools.partial(make_env, env_id, env_kwargs, entry_point)
    env = env_description(env_id, env_kwargs, entry_point)
    # resolve the task now: a bad id or kwarg fails before anything is written
    probe = env_fn()
    observation_space, action_space = probe.observation_space, probe.action_space
    probe.close()
    with FolderLock(out, "--out") as lock:
        check_dataset_folder(Path(out), env, observation_space, action_space)
        lock.claim()
        return collect_episodes(
            env_fn,
            env=env,
            episodes=episodes,
            out=out,
            policy=policy,
            num_envs=num_envs,
            seed=seed,
            vectorization=vectorization,
            progress=progress,
        )


def _resolve_config(cls: type, config: Any, overrides: Sequence[str]) -> Any:
    """A validated ``cls`` config from a YAML path, an instance, or None (defaults), plus
    dotted ``key=value`` overrides."""
    if isinstance(config, cls):
        return config_from_dict(cls, apply_overrides(config_to_dict(config), overrides, cls=cls))
    return load_config(cls, config, overrides)


def train_config(config: Any = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """``train``'s validated config from a YAML path, a :class:`TrainConfig` or None (the
    defaults), plus dotted ``key=value`` overrides."""
    return _resolve_config(TrainConfig, config, overrides)


def pretrain_config(config: Any = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """``pretrain``'s config. Config files hold the agent's sections too: a file is read with the
    train schema (a typo anywhere is caught) and its pretraining part kept; the overrides are
    checked against the pretraining keys alone."""
    agent_keys = set(TrainConfig.model_fields) - set(PretrainConfig.model_fields)
    for override in overrides:
        key = str(override).partition("=")[0].strip()
        if key.split(".")[0] in agent_keys:
            raise ConfigError(
                f"override {override!r}: {key!r} is a key of `smt-rl train` (the agent), which "
                "pretrain does not use; drop it, or run smt-rl train."
            )
    full = config if isinstance(config, PretrainConfig) else load_config(TrainConfig, config)
    kept = {k: v for k, v in config_to_dict(full).items() if k in PretrainConfig.model_fields}
    return config_from_dict(PretrainConfig, apply_overrides(kept, overrides, cls=PretrainConfig))


def _checked_dataset(cfg: PretrainConfig, run_dir: Path) -> TrajectoryDataset | None:
    """The dataset a run of ``cfg`` in ``run_dir`` starts from, opened and checked against the
    configured task (reading only): ``data.path``'s, else ``RUN_DIR/data`` when it holds one,
    else None (to collect).

    Raises:
        DatasetError: a missing or unreadable ``data.path``, or a dataset of another task.
    """
    wanted = env_description(cfg.env.id, cfg.env.kwargs, cfg.env.entry_point)
    given = cfg.data.path is not None
    path = Path(cfg.data.path) if given else run_dir / "data"
    if not given and not (path / "meta.json").exists():
        return None
    dataset = TrajectoryDataset(path)
    if dataset.meta["env"] != wanted:
        if given:
            where = f"data.path {cfg.data.path!r}"
            fix = "point data.path to a dataset of this task, or set data.path=null to collect one."
        else:
            where, fix = str(path), f"choose another out=, or delete {path} to collect it again."
        raise DatasetError(
            f"{where} holds task {dataset.meta['env']}, but the config asks for {wanted}: {fix}"
        )
    return dataset


def _dataset_for(cfg: PretrainConfig, run_dir: Path, progress: bool) -> TrajectoryDataset:
    """The dataset ``data.path`` names, or one collected into ``RUN_DIR/data`` (reused if there)."""
    dataset = _checked_dataset(cfg, run_dir)
    if cfg.data.path is not None:
        return dataset
    have = 0 if dataset is None else dataset.num_episodes
    path = run_dir / "data"
    if have < cfg.data.episodes:
        collect(
            cfg.env.id,
            episodes=cfg.data.episodes - have,
            out=path,
            policy=cfg.data.policy,
            num_envs=cfg.data.num_envs,
            vectorization=cfg.data.vectorization,
            seed=cfg.seed + have,
            env_kwargs=cfg.env.kwargs,
            entry_point=cfg.env.entry_point,
            progress=progress,
        )
    return TrajectoryDataset(path)


def resume_command(folder: Path) -> str | None:
    """A command that continues the unfinished pretraining in ``folder``: ``smt-rl pretrain
    --resume`` on a pretrain run, ``smt-rl train --resume`` on the ``pretrain`` folder of a train
    run; None when ``folder`` holds no saved config to continue with."""
    if (folder / "config.yaml").is_file():
        return f"smt-rl pretrain --resume {folder}"
    if folder.name == "pretrain" and (folder.parent / "config.yaml").is_file():
        return f"smt-rl train --resume {folder.parent}"
    return None


def resume_config(run_dir: str | os.PathLike) -> Path:
    """The config a run saved (``RUN_DIR/config.yaml``), to continue it with (``--resume``).

    Raises:
        ConfigError: ``run_dir`` is not a run folder.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"--resume {str(run_dir)!r}: no config.yaml there, so it is not a smt-rl run folder "
            "(or the run was killed before it started); check the path or start a new run."
        )
    return path


def pretrain(
    config: str | os.PathLike | PretrainConfig | None = None,
    overrides: Sequence[str] = (),
    method: str = "smt",
    progress: bool = True,
) -> dict[str, Any]:
    """SMT-pretrain a teacher and memory module; same as ``smt-rl pretrain CONFIG [key=value ...]``.

    Collects random-policy trajectories into ``RUN_DIR/data`` first when ``data.path`` is null.
    The run folder (``out``) receives ``config.yaml``, ``metrics.jsonl``, tensorboard events,
    ``checkpoint/`` (safetensors weights + JSON) and ``summary.json``.

    Args:
        config: a YAML file (e.g. ``configs/tmaze.yaml``), a :class:`PretrainConfig`, or None
            for the defaults.
        overrides: dotted ``key=value`` strings applied on top (``env.kwargs.length=50``).
        method: ``"smt"`` or ``"bptt"`` (the same memory cell trained by backpropagation through
            time, for comparison).
        progress: show progress bars.

    Returns:
        The run's summary (also in ``RUN_DIR/summary.json``).
    """
    cfg = pretrain_config(config, overrides)
    if cfg.data.path is None and cfg.data.episodes == 0:
        raise ConfigError(
            "data.episodes=0 and data.path=null: pretraining has no data to learn from; collect "
            "some (data.episodes=2000) or point data.path to a dataset."
        )
    run_dir = Path(cfg.out)
    # a missing or foreign dataset fails before anything is written; so does a task that cannot
    # be built (bad env.id / env.kwargs, unsupported spaces) when the data is still to collect
    given = _dataset_for(cfg, run_dir, progress=False) if cfg.data.path is not None else None
    if given is None:
        _check_task(cfg)
    else:
        check_model_fits(cfg.model, given.observation_space, given.action_space)
    ctx = distributed.setup(cfg.device)  # a world of one unless started by torchrun
    try:
        check = functools.partial(_check_pretrain_folder, cfg, run_dir, method, ctx.world_size)
        with _main_rank_lock(ctx, run_dir, check):
            if ctx.is_main:  # rank 0 writes the config and collects the data; the others wait
                save_config(cfg, run_dir / "config.yaml")
                if given is None:
                    _dataset_for(cfg, run_dir, progress)
            ctx.barrier()
            dataset = given if given is not None else _dataset_for(cfg, run_dir, progress=False)
            probe = probe_for(dataset.env_id)
            return pretrain_on_dataset(cfg, dataset, run_dir, method, progress, ctx, probe)
    finally:
        distributed.teardown(ctx)


@contextlib.contextmanager
def _main_rank_lock(
    ctx: distributed.DistContext, folder: Path, check: Callable[[], None]
) -> Iterator[None]:
    """Rank 0 holds ``folder``'s lock for the block, after ``check`` (which reads only) passed
    under it; a refusal (the lock, the check, the first write) is raised on every rank."""
    with contextlib.ExitStack() as stack:
        refused: BaseException | None = None
        if ctx.is_main:
            try:
                lock = stack.enter_context(FolderLock(folder, "out="))
                check()
                lock.claim()
            except Exception as exc:
                refused = exc
        refused = ctx.broadcast(refused)
        if refused is not None:
            raise refused
        yield


def _check_pretrain_folder(
    cfg: PretrainConfig, run_dir: Path, method: str, world_size: int
) -> None:
    """What ``run_dir`` already holds fits this pretraining (reading only): its ``data`` folder
    the task, its resume state the config, the method and the number of processes."""
    if cfg.data.path is None:
        _checked_dataset(cfg, run_dir)
    load_resume_state(run_dir, cfg, method, world_size, resume_command(run_dir))


def _check_task(cfg: PretrainConfig) -> None:
    """Build the task once and check its spaces, then what the algorithm needs of them: a bad
    ``env.id`` / ``env.kwargs`` / ``env.entry_point``, an unsupported space or a model too large
    for this machine fails here, naming the field."""
    from smt_rl.spaces import check_space

    env = make_env(cfg.env.id, dict(cfg.env.kwargs), cfg.env.entry_point)
    try:
        check_space(env.observation_space, "observation_space")
        check_space(env.action_space, "action_space")
    finally:
        env.close()
    if isinstance(cfg, TrainConfig):  # the algorithm's own checks (the SMT model must fit)
        agent_class(cfg.algo).check_config(cfg, env.observation_space, env.action_space)
    else:
        check_model_fits(cfg.model, env.observation_space, env.action_space)


def finished_pretraining(cfg: PretrainConfig, folder: Path) -> dict[str, Any] | None:
    """The summary of a finished pretraining in ``folder`` made with the same settings as ``cfg``
    (so ``train`` reuses it instead of redoing it), or None when there is none.

    Raises:
        ConfigError: ``folder`` holds a finished pretraining made with other settings.
        CheckpointError: its ``checkpoint.json`` is corrupt or invalid (the field named).
    """
    summary_path, spec_path = folder / "summary.json", folder / "checkpoint" / SPEC_FILE
    if not (summary_path.is_file() and spec_path.is_file()):
        return None
    spec = read_spec(spec_path)
    # read back through the schema: keys added since that run take their defaults (the behaviour
    # the run had), so a pretraining stays reusable across versions
    with spec_fields(spec_path.parent):
        stored = config_to_dict(config_from_dict(type(cfg), spec["config"], migrate=True))
    wanted = config_to_dict(cfg)
    differ = [
        key
        for key in PRETRAIN_SECTIONS
        if _without_path(key, stored.get(key)) != _without_path(key, wanted.get(key))
    ]
    if differ:
        raise ConfigError(
            f"{folder} holds a pretraining made with other settings ({', '.join(differ)} differ): "
            "choose a new `out=` folder, or delete that pretrain folder to pretrain again."
        )
    return json.loads(summary_path.read_text())


def _without_path(key: str, section: Any) -> Any:
    """``data`` compares without ``data.path`` (the same episodes may sit in another folder)."""
    if key == "data" and isinstance(section, dict):
        return {k: v for k, v in section.items() if k != "path"}
    return section


def train(
    config: str | os.PathLike | TrainConfig | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """The whole pipeline; same as ``smt-rl train CONFIG [key=value ...]``.

    ``algo: smt_ppo``: collect logged trajectories (or reuse ``data.path``), SMT-pretrain (into
    ``RUN_DIR/pretrain``), PPO x DMT for ``total_timesteps`` env steps. ``algo: ppo |
    recurrent_ppo | gru_ppo``: train that baseline for ``total_timesteps`` env steps (no data, no
    pretraining). Then, for every algo, the same deterministic evaluation on fresh seeds. The run
    folder gets ``config.yaml``, ``metrics.jsonl`` (RL lines carry ``time/wall_s`` since the start,
    pretraining included), tensorboard events, ``checkpoint/`` (the agent) and ``summary.json``.

    Every check (config, task, ``data.path``, what the run folder already holds, the folder's
    lock) comes before the first write: a refused run leaves the folder as it was.
    """
    cfg = train_config(config, overrides)
    started = time.perf_counter()
    run_dir = Path(cfg.out)
    agent_cls = agent_class(cfg.algo)
    _check_task(cfg)  # a bad task or kwarg fails here, before anything is written
    with FolderLock(run_dir, "out=") as lock:
        # what the folder holds fits this config (data, pretraining, RL resume state)
        agent_cls.check_run(cfg, run_dir)
        lock.claim()
        save_config(cfg, run_dir / "config.yaml")
        return _train_in(cfg, agent_cls, run_dir, started, progress)


def _train_in(
    cfg: TrainConfig, agent_cls: type, run_dir: Path, started: float, progress: bool
) -> dict[str, Any]:
    """:func:`train`'s work once its checks passed and its run folder is locked: the agent (with
    any preparation), its learning, its evaluation, its summary."""
    from smt_rl.run_logger import RunLogger, drop_log_lines

    env_fn = functools.partial(make_env, cfg.env.id, dict(cfg.env.kwargs), cfg.env.entry_point)
    agent = agent_cls.from_config(cfg, env_fn, run_dir, progress)
    rl_steps = cfg.rl_timesteps(agent.data_steps)
    # a run killed in its reinforcement-learning phase: an agent that resumes exactly continues
    # from its resume state, others start the phase over; the log keeps the lines up to there
    rl_state = run_dir / RL_RESUME_FILE
    resumed_at = _resumed_timesteps(rl_state) if agent.resumes_exactly else 0
    restarted = drop_log_lines(run_dir / "metrics.jsonl", phase="rl", after=resumed_at)
    logger = RunLogger(run_dir, purge_step=resumed_at + 1 if restarted else None)

    def log(step: int, metrics: dict[str, float]) -> None:
        wall = round(time.perf_counter() - started, 3)
        logger.log(step, {**metrics, "time/wall_s": wall}, phase="rl")

    agent.logger = log
    try:
        agent.learn(rl_steps, progress, resume_path=rl_state)
    finally:
        logger.close()
    agent.save(run_dir / "checkpoint")
    evaluation = agent.evaluate(
        env_fn, cfg.eval.episodes, cfg.seed + cfg.eval.seed_offset, cfg.eval.deterministic
    )
    summary = {
        "env_id": cfg.env.id,
        "algo": cfg.algo,
        "seed": cfg.seed,
        "env_steps": agent.num_timesteps,
        **({"pretrain_env_steps": agent.data_steps} if agent.data_steps else {}),
        "wall_s": round(time.perf_counter() - started, 3),
        **evaluation,
        **agent.summary,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    shutil.rmtree(rl_state.parent, ignore_errors=True)  # the state and any stray temp file
    return summary


RL_RESUME_FILE = "resume/rl_state.pt"  # the PPO x DMT loop's state (smt_ppo), while it runs


class _ResumedAt(Record):
    """What the pipeline reads of an RL resume state (the agent checks the rest)."""

    num_timesteps: NonNegativeInt


def _resumed_timesteps(path: Path) -> int:
    """The env steps at which a resume state left the RL phase (0: none, it starts over)."""
    if not path.is_file():
        return 0
    saved = load_tree(path, CheckpointError, RESUME_FIX)
    check_record(_ResumedAt, saved, path, CheckpointError, RESUME_FIX)
    return saved["num_timesteps"]


def load_agent(folder: str | os.PathLike, env_fn: Any = None, device: str = "auto") -> Any:
    """Any saved agent, by the kind its checkpoint declares (see :mod:`agents.registry`).

    Raises:
        CheckpointError: missing, corrupt or foreign checkpoint.
    """
    spec_path = Path(folder) / SPEC_FILE
    if not spec_path.is_file():
        raise CheckpointError(
            f"{str(folder)!r} holds no agent checkpoint ({SPEC_FILE} missing): point to "
            "RUN_DIR/checkpoint of a finished `smt-rl train` run."
        )
    kind = read_spec(spec_path)["kind"]
    algo = algo_of_kind(kind)
    if algo is None:
        raise CheckpointError(
            f"{folder} holds a {kind!r} checkpoint, not an agent's; agents write "
            f"{', '.join(repr(a.kind) for a in ALGORITHMS.values())}."
        )
    return agent_class(algo).load(folder, env_fn, device)


def evaluate(run_dir: str | os.PathLike, episodes: int | None = None) -> dict[str, Any]:
    """Deterministic evaluation of the agent saved in ``run_dir`` on fresh seeds; same as
    ``smt-rl eval RUN_DIR [--episodes N]``. Writes ``RUN_DIR/eval.json``, holding the run
    folder's lock (refused while the run trains)."""
    run_dir = Path(run_dir)
    with FolderLock(run_dir, option=None) as lock:
        agent = load_agent(run_dir / "checkpoint")
        lock.claim()
        cfg = agent.cfg
        env_fn = functools.partial(make_env, cfg.env.id, dict(cfg.env.kwargs), cfg.env.entry_point)
        result = agent.evaluate(
            env_fn,
            episodes or cfg.eval.episodes,
            cfg.seed + 2 * cfg.eval.seed_offset,
            cfg.eval.deterministic,
        )
        result = {"env_id": cfg.env.id, "algo": cfg.algo, **result}
        atomic_write_json(run_dir / "eval.json", result)
        return result


def benchmark(
    suite: str,
    seeds: int | None = None,
    jobs: int = 1,
    overrides: Sequence[str] = (),
    echo: Any = print,
    tasks: Sequence[str] | None = None,
    run: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    ray_cpus: int | None = None,
) -> dict[str, Any]:
    """Run a suite and write its results; same as ``smt-rl benchmark SUITE [--seeds N]
    [--jobs J] [--engine ray] [key=value ...]``.

    Runs every (task, method, seed) that has not finished yet as its own ``smt-rl train`` process
    (at most ``jobs`` at once), then writes ``OUT/results.md``, ``OUT/results.json`` and
    ``OUT/plots/*.png`` from every finished run of the suite. It holds ``OUT``'s lock throughout
    (a second benchmark on the same ``OUT`` is refused); each run holds its own run folder's.
    Without matplotlib (a core install) the tables are written and the plots skipped, a line
    naming the extra ``smt-rl[plots]``; a method whose extra is missing fails before any run.

    Args:
        suite: a suite file, or a name under ``configs/suites`` (``quick``, ``memory_length``...).
        seeds: seeds per (task, method) (default: the suite's ``seeds``).
        jobs: processes at once.
        overrides: ``key=value`` on the suite file (e.g. ``out=runs/b2``).
        echo: where progress lines go.
        tasks: run (and tabulate) only these task names of the suite.
        run: False: start nothing, only tabulate and plot the runs already finished.
        engine: ``"local"``: processes on this machine, ``jobs`` at once; ``"ray"``: one Ray task
            per run (:func:`agents.bench.ray_runner.run_all_ray`), each reserving the suite's
            ``threads`` CPUs (at least one) and ``gpus_per_run`` GPUs.
        ray_address: a Ray cluster's address (None: a local Ray).
        ray_cpus: CPUs of the local Ray (None: all of this machine's).

    Returns:
        ``{"rows": [...], "results": path, "plots": [...], "failed": [...]}``.
    """
    from agents.bench import aggregate, load_suite, read_run, run_specs, write_results
    from agents.bench.plots import plot_curves, plot_success_vs_memory

    if engine not in ("local", "ray"):
        raise ConfigError(f"engine {engine!r} is not one of 'local', 'ray'.")
    suite_cfg = load_suite(suite, list(overrides))
    if tasks:
        unknown = sorted(set(tasks) - {t.name for t in suite_cfg.tasks})
        if unknown:
            raise ConfigError(
                f"--tasks {unknown} not in suite {suite!r}; its tasks: "
                f"{', '.join(t.name for t in suite_cfg.tasks)}."
            )
        suite_cfg.tasks = [t for t in suite_cfg.tasks if t.name in tasks]
    specs = run_specs(suite_cfg, seeds)
    for method in dict.fromkeys(s.method for s in specs if run):  # a missing extra: before any
        check_installed(method)  # run starts
    out = Path(suite_cfg.out)
    with FolderLock(out, "out=") as lock:
        lock.claim()
        if run:  # what `smt-rl benchmark --resume OUT` starts again from
            atomic_write_json(
                out / BENCHMARK_FILE,
                {
                    "suite": str(Path(suite).resolve()) if Path(suite).is_file() else suite,
                    "overrides": list(overrides),
                    "seeds": seeds,
                    "tasks": list(tasks) if tasks else None,
                },
            )
        report = {"failed": []}
        if run:
            report = _run_suite(specs, suite_cfg, engine, jobs, ray_address, ray_cpus, echo)
        records = [read_run(s.out, s.task) for s in specs if s.finished]
        rows = aggregate(records)
        path = write_results(rows, out, f"Suite {suite_cfg.name}")
        lengths = {t.name: t.memory_length for t in suite_cfg.tasks if t.memory_length is not None}
        try:
            plots = plot_curves(records, out / "plots")
            plots.append(plot_success_vs_memory(rows, lengths, out / "plots"))
        except MissingExtraError as e:  # a core install: the tables, without the plots
            echo(f"plots skipped: {e}")
            plots = []
    plots = [p for p in plots if p is not None]
    return {
        "rows": rows,
        "results": str(path),
        "plots": [str(p) for p in plots],
        "failed": [str(s.out) for s in report["failed"]],
    }


def _run_suite(
    specs: list,
    suite_cfg: Any,
    engine: str,
    jobs: int,
    ray_address: str | None,
    ray_cpus: int | None,
    echo: Any,
) -> dict[str, list]:
    """Run a suite's unfinished runs on ``engine`` (see :func:`benchmark`); returns the runner's
    report."""
    if engine == "ray":
        from agents.bench.ray_runner import run_all_ray

        threads = max(1, suite_cfg.threads)
        return run_all_ray(specs, ray_address, ray_cpus, threads, suite_cfg.gpus_per_run, echo)
    from agents.bench import run_all

    return run_all(specs, jobs, echo)


BENCHMARK_FILE = "benchmark.json"  # in a benchmark's out folder: how it was started
BENCHMARK_FIX = (
    "restore it, or start the benchmark again with its suite: `smt-rl benchmark SUITE "
    "[key=value ...]` (finished runs are skipped)."
)


class BenchmarkStart(Record, extra="forbid"):
    """``benchmark.json``: how a benchmark was started (what :func:`benchmark` writes)."""

    suite: str
    overrides: list[str]
    seeds: NonNegativeInt | None  # None (or 0): the suite's own
    tasks: list[str] | None


def resume_benchmark(out: str | os.PathLike) -> dict[str, Any]:
    """How the benchmark in ``out`` was started: ``{"suite", "overrides", "seeds", "tasks"}``.

    Raises:
        ConfigError: ``out`` holds no benchmark, or its ``benchmark.json`` is corrupt or has a
            field missing or of the wrong type (named).
    """
    path = Path(out) / BENCHMARK_FILE
    if not path.is_file():
        raise ConfigError(
            f"--resume {str(out)!r}: no {BENCHMARK_FILE} there, so no benchmark was started in "
            "it; check the path (the suite's out folder) or start one: `smt-rl benchmark SUITE`."
        )
    try:
        started = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise ConfigError(f"{path} is corrupt ({exc}); {BENCHMARK_FIX}") from exc
    check_record(BenchmarkStart, started, path, ConfigError, BENCHMARK_FIX)
    return started


def compare(run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows (mean and 95% bootstrap CI over seeds per task and method) for finished run folders;
    same as ``smt-rl compare RUN_DIR...``, which prints them as a markdown table."""
    from agents.bench import aggregate, read_run

    if not run_dirs:
        raise ConfigError(
            "compare needs at least one run folder (RUN_DIR written by smt-rl train)."
        )
    return aggregate([read_run(folder) for folder in run_dirs])
