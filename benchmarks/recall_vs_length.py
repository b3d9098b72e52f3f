"""Cue recall at the PassiveTMaze junction against corridor length: SMT vs BPTT memory modules.

For each corridor ``length`` (episodes of ``length + 2`` steps, random-policy data) the same
model (``configs/tmaze.yaml`` sizes) is pretrained twice on the same dataset with
:func:`agents.pipeline.pretrain`:

- ``smt``: joint SMT (teacher + memory module, ``updates`` updates), then offline DMT
  (``dmt_updates`` updates of the memory module alone, teacher frozen);
- ``bptt``: the same memory cell and decoder trained by backpropagation through time.

Equal budget: by default BPTT gets as many optimiser updates as SMT's two phases together
(``updates + dmt_updates``), on batches of the same size (``--bptt-updates smt`` gives it only
``updates``). Both are recorded.

Recorded per run (the held-out episodes, memory module rolled out alone from its initial state):
``probe/junction_reward_sign`` (the decoder, reading the module's own memory at the junction,
predicts the right reward sign for both actions: the real recall measure; 0.5 = chance),
``probe/cue_accuracy`` (a linear probe on the same memory; can be high even for untrained
networks), ``rollout/memory_mse`` (SMT only: student vs teacher), ``wall_s`` and the budget.

Rows are merged into ``--out`` after every run (keyed by length, method, seed and budget); rows
already present are skipped, so an interrupted run resumes where it stopped.

Usage::

    python benchmarks/recall_vs_length.py [--lengths 50 200 1000] [--updates 300 600 200]
        [--dmt-updates 100 200 50] [--episodes 800 800 500] [--batch-size 32 16 8]
        [--seeds 0]

A list option takes one value (for every length) or one value per length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from machine import cpu_model

from agents.pipeline import collect, pretrain
from smt_rl.data import TrajectoryDataset

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tmaze.yaml"
ENV_ID = "smt_rl/PassiveTMaze-v0"
METHODS = ("smt", "bptt")
# budgets sized for one CPU thread (see BENCHMARKS.md): per length, identical for both methods
DEFAULTS = {
    "lengths": [50, 200, 1000],
    "updates": [300, 600, 200],
    "dmt_updates": [100, 200, 50],
    "episodes": [800, 800, 500],
    "batch_size": [32, 16, 8],
}
KEY_FIELDS = (
    "length",
    "method",
    "seed",
    "updates",
    "dmt_updates",
    "batch_size",
    "episodes",
    "extra_overrides",
)
METRICS = (
    "probe/junction_reward_sign",
    "probe/cue_accuracy",
    "rollout/memory_mse",
    "rollout/memory_mse_last",
    "loss/pred",
    "loss/dyn",
    "dmt/loss",
)


def per_length(values: list[int], lengths: list[int], name: str) -> dict[int, int]:
    """One value for every length, or one value per length."""
    if len(values) == 1:
        values = values * len(lengths)
    if len(values) != len(lengths):
        raise SystemExit(
            f"--{name}: give one value or one per length ({len(lengths)}), got {len(values)}"
        )
    return dict(zip(lengths, values, strict=True))


def dataset_for(data_dir: Path, length: int, episodes: int, seed: int) -> Path:
    """A random-policy dataset of ``episodes`` episodes at this length (collected once, reused)."""
    path = data_dir / f"tmaze_L{length}_ep{episodes}_seed{seed}"
    if (path / "meta.json").exists():
        if TrajectoryDataset(path).num_episodes == episodes:
            return path
        shutil.rmtree(path)  # a partial or different collection: start over
    collect(
        ENV_ID,
        episodes=episodes,
        out=path,
        num_envs=8,
        seed=seed,
        env_kwargs={"length": length},
        progress=False,
    )
    return path


def smt_phase_metrics(run_dir: Path) -> dict[str, Any]:
    """The evaluation logged at the end of the joint SMT phase (before DMT), from the run's
    ``metrics.jsonl``: the memory module as SMT alone left it. Empty if not found."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    last: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("phase") == "smt" and "probe/junction_reward_sign" in record:
            last = record
    return {f"after_smt_phase/{k}": last.get(k) for k in METRICS if k in last}


def load_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out``; SMT rows written before the pre-DMT figures were recorded get them
    from their run folder when it is still there."""
    rows = json.loads(out.read_text()).get("rows", []) if out.exists() else []
    for row in rows:
        row.setdefault("extra_overrides", [])
        if row["method"] == "smt" and "after_smt_phase/probe/junction_reward_sign" not in row:
            row.update(smt_phase_metrics(Path(row.get("run_dir", "/nonexistent"))))
    return rows


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(tuple(row.get(k) or ()) if k == "extra_overrides" else row[k] for k in KEY_FIELDS)


def save(out: Path, rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    rows = sorted(rows, key=lambda r: (r["length"], r["method"] != "smt", r["seed"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    os.replace(tmp, out)


def machine_info() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| length (T) | method | seed | updates (+DMT) | batch | episodes (held out) "
        "| junction reward sign | cue probe acc | rollout memory MSE "
        "| SMT phase only: reward sign / memory MSE | wall s | extra |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["length"], r["method"] != "smt", r["seed"])):
        upd = r["train_updates"]
        upd = f"{upd} (+{r['dmt_updates']})" if r["method"] == "smt" else str(upd)
        before = (
            f"{fmt(r.get('after_smt_phase/probe/junction_reward_sign'))} / "
            f"{fmt(r.get('after_smt_phase/rollout/memory_mse'))}"
            if r["method"] == "smt"
            else "-"
        )
        print(
            f"| {r['length']} ({r['T']}) | {r['method'].upper()} | {r['seed']} | {upd} | "
            f"{r['batch_size']} | {r['episodes']} ({r['val_episodes']}) | "
            f"{fmt(r.get('probe/junction_reward_sign'))} | {fmt(r.get('probe/cue_accuracy'))} | "
            f"{fmt(r.get('rollout/memory_mse'))} | {before} | {r['wall_s']:.0f} | "
            f"{' '.join(r.get('extra_overrides') or []) or '-'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULTS["lengths"])
    parser.add_argument("--updates", type=int, nargs="+", default=None, help="SMT joint updates")
    parser.add_argument("--dmt-updates", type=int, nargs="+", default=None)
    parser.add_argument("--episodes", type=int, nargs="+", default=None)
    parser.add_argument("--batch-size", type=int, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--bptt-updates",
        choices=("total", "smt"),
        default="total",
        help="BPTT updates = SMT updates + DMT updates (total) or SMT updates only (smt)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra pretrain overrides for every run (recorded in the row), e.g. "
        "offline_dmt.lr=1e-4",
    )
    parser.add_argument("--val-max-episodes", type=int, default=128)
    parser.add_argument("--data-dir", default="/tmp/smt_rl_bench/recall_data")
    parser.add_argument("--runs-dir", default="/tmp/smt_rl_bench/recall_runs")
    parser.add_argument("--out", default="benchmarks/results/recall_vs_length.json")
    parser.add_argument("--force", action="store_true", help="rerun rows already in --out")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out")
    args = parser.parse_args()
    torch.set_num_threads(1)

    out = Path(args.out)
    rows = load_rows(out)
    if args.table_only:
        if out.exists():  # keep the figures filled in from run folders
            save(out, rows, json.loads(out.read_text()).get("machine", {}))
        print_table(rows)
        return

    lengths = args.lengths

    def option(name: str) -> dict[int, int]:
        given = getattr(args, name)
        if given is None:  # the default budget of each length (or the 1000 one for others)
            table = dict(zip(DEFAULTS["lengths"], DEFAULTS[name], strict=True))
            return {n: table.get(n, DEFAULTS[name][-1]) for n in lengths}
        return per_length(given, lengths, name.replace("_", "-"))

    updates, dmt, episodes, batch = (
        option(n) for n in ("updates", "dmt_updates", "episodes", "batch_size")
    )
    machine = machine_info()
    done = {row_key(r) for r in rows}
    started = time.perf_counter()
    for length in lengths:
        for seed in args.seeds:
            for method in args.methods:
                key_row = {
                    "length": length,
                    "method": method,
                    "seed": seed,
                    "updates": updates[length],
                    "dmt_updates": dmt[length],
                    "batch_size": batch[length],
                    "episodes": episodes[length],
                    "extra_overrides": list(args.set),
                }
                if row_key(key_row) in done and not args.force:
                    print(f"skip (already in {out}): {key_row}")
                    continue
                data = dataset_for(Path(args.data_dir), length, episodes[length], seed)
                train_updates = updates[length]
                if method == "bptt" and args.bptt_updates == "total":
                    train_updates += dmt[length]
                tag = "".join(
                    "_" + "".join(c if c.isalnum() or c in ".-" else "-" for c in item)
                    for item in args.set
                )
                run_dir = Path(args.runs_dir) / (
                    f"L{length}_{method}_s{seed}_u{updates[length]}_d{dmt[length]}"
                    f"_b{batch[length]}_e{episodes[length]}{tag}"
                )
                overrides = [
                    f"env.kwargs.length={length}",
                    f"data.path={data}",
                    f"data.val_max_episodes={args.val_max_episodes}",
                    f"smt.updates={train_updates}",
                    f"offline_dmt.updates={dmt[length]}",
                    f"smt.batch_size={batch[length]}",
                    f"smt.eval_every={10**9}",  # evaluate at the end of each phase only
                    f"seed={seed}",
                    f"out={run_dir}",
                    *args.set,
                ]
                print(f"run: method={method} " + " ".join(overrides), flush=True)
                summary = pretrain(CONFIG, overrides, method=method, progress=False)
                n_val = min(
                    args.val_max_episodes, max(1, round(episodes[length] * 0.1))
                )  # data.val_fraction of configs/tmaze.yaml
                row = {
                    **key_row,
                    "T": length + 2,
                    "train_updates": summary["updates"],
                    "total_updates": summary["updates"] + summary["dmt_updates"],
                    "val_episodes": n_val,
                    "sample_steps": (summary["updates"] + summary["dmt_updates"])
                    * batch[length]
                    * (length + 2),
                    "wall_s": summary["wall_s"],
                    "s_per_update": round(
                        summary["wall_s"] / (summary["updates"] + summary["dmt_updates"]), 4
                    ),
                    **{k: summary.get(k) for k in METRICS},
                    **(smt_phase_metrics(run_dir) if method == "smt" else {}),
                    "bptt_updates_rule": args.bptt_updates,
                    "run_dir": str(run_dir),
                    "device": summary["device"],
                    "num_params": summary["num_params"],
                }
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
                done.add(row_key(row))
                save(out, rows, machine)
    print_table(rows)
    print(f"\nwall-clock of this invocation: {time.perf_counter() - started:.0f} s; rows in {out}")


if __name__ == "__main__":
    main()
