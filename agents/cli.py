"""The ``smt-rl`` command line: one sub-command per pipeline step."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from smt_rl.errors import SmtRlError


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "collect":
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
    except (SmtRlError, ValueError) as exc:
        print(f"smt-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
