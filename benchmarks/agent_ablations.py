"""Ablations of the SMT agent on one config: which part of SMT x DMT does the work?

Variants (each a full ``smt-rl train`` run with the same seed, budget and dataset):

- ``full``: SMT pretraining, offline DMT, PPO with on-policy DMT (the config as written);
- ``frozen_memory``: SMT + offline DMT, then the memory is frozen during RL
  (``onpolicy_dmt.enabled=false``);
- ``no_dmt``: SMT only, no DMT at all (neither offline nor on-policy);
- ``dmt_alone``: no SMT pretraining; the teacher learns online from the agent's episodes and the
  memory only by on-policy DMT (``smt.updates=0 offline_dmt.updates=0
  online_smt.enabled=true``);
- ``random_memory``: an untrained memory cell, frozen (the floor: what PPO gets from a random
  recurrent feature map plus the current step's embedding).

    python benchmarks/agent_ablations.py configs/tmaze.yaml --out benchmarks/results/abl_tmaze
    python benchmarks/agent_ablations.py configs/popgym_stateless_cartpole.yaml --jobs 2 \\
        --out benchmarks/results/abl_cartpole

Runs already finished (their ``summary.json`` exists) are skipped. Results go to
``OUT/ablations.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "frozen_memory": ["onpolicy_dmt.enabled=false"],
    "no_dmt": ["onpolicy_dmt.enabled=false", "offline_dmt.updates=0"],
    "dmt_alone": ["smt.updates=0", "offline_dmt.updates=0", "online_smt.enabled=true"],
    "random_memory": ["smt.updates=0", "offline_dmt.updates=0", "onpolicy_dmt.enabled=false"],
}
KEYS = ("eval/success_rate", "eval/return_mean", "eval/return_std", "env_steps", "wall_s")


def run_variant(config: str, name: str, out: Path, extra: list[str], threads: int):
    """Start ``smt-rl train`` for one variant; returns the process (None when already done)."""
    run_dir = out / name
    if (run_dir / "summary.json").exists():
        return None
    data = out / "full" / "data"
    reuse = [f"data.path={data}"] if name != "full" and (data / "meta.json").exists() else []
    cmd = [
        sys.executable,
        "-m",
        "agents",
        "train",
        config,
        f"out={run_dir}",
        *VARIANTS[name],
        *reuse,
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir.parent / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    print("running:", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=1, help="variants run at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every variant")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pending = list(args.variants)
    if "full" in pending:  # first, alone: the others reuse its dataset
        proc = run_variant(args.config, "full", args.out, args.overrides, args.threads)
        if proc is not None and proc.wait() != 0:
            raise SystemExit(f"variant full failed; see {args.out / 'full.log'}")
        pending.remove("full")
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            proc = run_variant(args.config, name, args.out, args.overrides, args.threads)
            if proc is not None:
                running.append((name, proc))
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                if proc.returncode != 0:
                    print(f"variant {name} failed; see {args.out / (name + '.log')}")
        time.sleep(1.0)
    results = {}
    for name in args.variants:
        path = args.out / name / "summary.json"
        if path.exists():
            summary = json.loads(path.read_text())
            results[name] = {k: summary.get(k) for k in KEYS}
    (args.out / "ablations.json").write_text(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.overrides,
                "variants": {k: VARIANTS[k] for k in args.variants},
                "results": results,
                "wall_s": round(time.perf_counter() - started, 1),
            },
            indent=1,
        )
    )
    print("| variant | success | return (mean ± std) | env steps | wall-clock (s) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        success = "n/a" if r["eval/success_rate"] is None else f"{r['eval/success_rate']:.2f}"
        print(
            f"| {name} | {success} | {r['eval/return_mean']:.3f} ± {r['eval/return_std']:.3f} "
            f"| {r['env_steps']} | {r['wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
