"""The ``smt-rl`` command line: one sub-command per pipeline step."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from smt_rl.errors import ConfigError, SmtRlError


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"length\": 50}}', got {text!r}"
        )
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smt-rl", description="Memory for RL agents without backpropagation through time."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_collect, _add_pretrain, _add_train, _add_benchmark, _add_compare, _add_eval):
        add(sub)
    return parser


def _add_collect(sub) -> None:
    collect = sub.add_parser(
        "collect", help="log episodes of a behaviour policy to a dataset folder"
    )
    collect.add_argument("env_id", help="gymnasium id, e.g. smt_rl/PassiveTMaze-v0")
    collect.add_argument("--episodes", type=_positive_int, required=True, help="episodes to write")
    collect.add_argument("--out", required=True, help="dataset folder (created or appended to)")
    collect.add_argument("--policy", default="random", help="behaviour policy (default: random)")
    collect.add_argument(
        "--num-envs", type=_positive_int, default=1, help="environments stepped together"
    )
    collect.add_argument("--seed", type=int, default=0, help="env i is reset with seed+i")
    collect.add_argument(
        "--env-kwargs", type=_json_object, default={}, help="JSON, e.g. '{\"length\": 50}'"
    )
    collect.add_argument("--entry-point", default=None, help="package.module:Class of your own env")
    collect.add_argument(
        "--vectorization",
        choices=("sync", "async"),
        default="sync",
        help="sync: one process; async: one worker process per env",
    )
    collect.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    collect.set_defaults(run=_collect)


def _add_config_arguments(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """CONFIG, key=value overrides, --resume, --list-keys and --no-progress."""
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    parser.add_argument("--resume", metavar="RUN_DIR", help=resume_help)
    parser.add_argument("--list-keys", action="store_true", help="list config keys and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_pretrain(sub) -> None:
    pretrain = sub.add_parser(
        "pretrain",
        help="SMT-pretrain a teacher and memory module (collects data first if data.path is null)",
        description="CONFIG is a YAML file (e.g. configs/tmaze.yaml); overrides use dotted keys: "
        "env.kwargs.length=50 out=runs/x data.episodes=2000 seed=1. "
        "`smt-rl pretrain --list-keys` lists every key.",
    )
    _add_config_arguments(
        pretrain,
        "continue a killed run from its last resume state, with the config it saved "
        "(RUN_DIR/config.yaml); re-running the same command does the same",
    )
    pretrain.add_argument(
        "--method",
        choices=("smt", "bptt"),
        default="smt",
        help="smt (default) or bptt: the same memory cell trained through time",
    )
    pretrain.set_defaults(run=_pretrain)


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train",
        help="the whole pipeline: collect, SMT-pretrain, PPO x DMT, evaluate",
        description="CONFIG is a YAML file (e.g. configs/tmaze.yaml) with key=value overrides. "
        "`smt-rl train --list-keys` lists every key.",
    )
    _add_config_arguments(
        train,
        "continue a killed run with the config it saved: its pretraining resumes from its "
        "last resume state, a reinforcement-learning phase cut short continues from its last "
        "resume state (smt_ppo) or starts over (the baselines)",
    )
    train.set_defaults(run=_train)


def _add_benchmark(sub) -> None:
    bench = sub.add_parser(
        "benchmark",
        help="run a suite of methods x tasks x seeds and write tables and plots",
        description="SUITE is a file or a name under configs/suites (quick, memory_length, "
        "popgym, minigrid). Finished runs are skipped, so a killed benchmark resumes.",
    )
    bench.add_argument("suite", nargs="?", help="suite file or name")
    bench.add_argument("overrides", nargs="*", help="key=value overrides of the suite file")
    bench.add_argument("--seeds", type=_positive_int, default=None, help="seeds per task/method")
    bench.add_argument("--jobs", type=_positive_int, default=1, help="runs at once")
    bench.add_argument("--tasks", nargs="+", default=None, help="only these tasks of the suite")
    bench.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: processes on this machine (--jobs at once); ray: one Ray task per run, "
        "each reserving the suite's threads (CPUs) / gpus_per_run",
    )
    bench.add_argument(
        "--ray-address", default=None, help="a Ray cluster's address (default: a local Ray)"
    )
    bench.add_argument("--ray-cpus", type=_positive_int, default=None, help="CPUs of the local Ray")
    bench.add_argument(
        "--report-only", action="store_true", help="start no run: tabulate the finished ones"
    )
    bench.add_argument(
        "--resume",
        metavar="OUT",
        help="continue a killed benchmark from its folder (OUT/benchmark.json holds the suite, "
        "overrides, seeds and tasks it was started with); finished runs are skipped",
    )
    bench.set_defaults(run=_benchmark)


def _add_compare(sub) -> None:
    compare = sub.add_parser("compare", help="results table (mean, 95%% CI) of finished runs")
    compare.add_argument("run_dirs", nargs="+", help="run folders written by `smt-rl train`")
    compare.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    compare.set_defaults(run=_compare)


def _add_eval(sub) -> None:
    evaluate = sub.add_parser("eval", help="deterministic evaluation of a trained run")
    evaluate.add_argument("run_dir", help="run folder written by `smt-rl train`")
    evaluate.add_argument("--episodes", type=_positive_int, default=None, help="episodes")
    evaluate.set_defaults(run=_eval)


def _split_config(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(config file, overrides); a first word with '=' that is no YAML file is an override.
    With ``--resume RUN_DIR``: the run's saved config, no overrides."""
    if getattr(args, "resume", None):
        from agents.pipeline import resume_config

        if args.config or args.overrides:
            raise ConfigError(
                "--resume continues a run with the config it saved; drop the CONFIG and "
                "key=value arguments (or start a new run without --resume)."
            )
        return str(resume_config(args.resume)), []
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


# ---------------------------------------------------------------------------- commands
def _collect(args: argparse.Namespace) -> int:
    from agents.pipeline import collect

    result = collect(
        args.env_id,
        episodes=args.episodes,
        out=args.out,
        policy=args.policy,
        num_envs=args.num_envs,
        seed=args.seed,
        env_kwargs=args.env_kwargs,
        entry_point=args.entry_point,
        vectorization=args.vectorization,
        progress=not args.no_progress,
    )
    print(json.dumps(vars(result), indent=1))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    if args.list_keys:
        from smt_rl.config import describe_config
        from smt_rl.smt.config import PretrainConfig

        print(describe_config(PretrainConfig))
        print(
            "# config files may also hold the agent's sections (`smt-rl train "
            "--list-keys`): pretrain checks them and ignores them"
        )
        return 0
    from agents.pipeline import pretrain, pretrain_config
    from smt_rl.device import set_threads

    cfg = pretrain_config(*_split_config(args))
    set_threads(cfg.threads)  # once, before any torch work
    summary = pretrain(cfg, method=args.method, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(json.dumps(summary, indent=1))
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.list_keys:
        from agents.config import TrainConfig
        from smt_rl.config import describe_config

        print(describe_config(TrainConfig))
        return 0
    from agents.pipeline import train, train_config
    from smt_rl.device import set_threads

    cfg = train_config(*_split_config(args))
    set_threads(cfg.threads)  # once, before any torch work
    print(json.dumps(train(cfg, progress=not args.no_progress), indent=1))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from agents.pipeline import benchmark, resume_benchmark

    if args.resume:
        if args.suite or args.overrides or args.seeds or args.tasks:
            raise ConfigError(
                "--resume continues a benchmark as it was started; drop SUITE, "
                "key=value, --seeds and --tasks."
            )
        started = resume_benchmark(args.resume)
    elif args.suite is None:
        raise ConfigError("benchmark needs a SUITE (a file or a name) or --resume OUT.")
    else:
        started = {
            "suite": args.suite,
            "overrides": args.overrides,
            "seeds": args.seeds,
            "tasks": args.tasks,
        }
    result = benchmark(
        started["suite"],
        started["seeds"],
        args.jobs,
        started["overrides"],
        tasks=started["tasks"],
        run=not args.report_only,
        engine=args.engine,
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
    )
    print(Path(result["results"]).read_text())
    print("plots:", *result["plots"], sep="\n  ")
    if result["failed"]:
        print("failed runs (run the benchmark again to retry):", *result["failed"], sep="\n  ")
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from agents.bench import markdown_table
    from agents.pipeline import compare

    rows = compare(args.run_dirs)
    print(json.dumps(rows, indent=1) if args.json else markdown_table(rows))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from agents.pipeline import evaluate

    print(json.dumps(evaluate(args.run_dir, args.episodes), indent=1))
    return 0


# how each command names the folder it writes into, for the fix of an OS error
_OUTPUT_OPTION = {"collect": "--out", "pretrain": "out=", "train": "out=", "benchmark": "out="}
# errors that only a write gives; the fix they call for
_WRITE_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota exceeded)",
    errno.EFBIG: "free some space (file too large)",
    errno.EROFS: "the file system is read-only",
}
_OTHER_FIXES = {
    errno.EACCES: "check the permissions",
    errno.EPERM: "check the permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EEXIST: "something is in the way there; move it away",
    errno.EISDIR: "a folder is in the way there; move it away",
    errno.ENOENT: "check the path",
}


def os_error_message(exc: OSError, command: str) -> str:
    """One line for an OS error: what could not be done to which file, and the fix
    (``cannot write runs/x/metrics.jsonl: [Errno 28] No space left on device; free some space or
    choose another out=``)."""
    where = f" {exc.filename}" if exc.filename else ""
    verb = "cannot write" if exc.errno in _WRITE_FIXES else "cannot access"
    reason = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)
    fix = _WRITE_FIXES.get(exc.errno) or _OTHER_FIXES.get(exc.errno) or "check that path"
    option = _OUTPUT_OPTION.get(command)
    return f"{verb}{where}: {reason}; {fix}" + (f" or choose another {option}" if option else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error the user can fix is one line on stderr and exit code 2 (an
    interrupt: 130), not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (SmtRlError, ValueError) as exc:
        print(f"smt-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = os_error_message(exc, args.command)
        print(f"smt-rl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smt-rl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
