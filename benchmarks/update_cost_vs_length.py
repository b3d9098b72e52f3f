"""Cost of one training update against sequence length: SMT (time-parallel) vs BPTT (unrolled).

One update = forward + backward + gradient clipping + AdamW step, as in the pretraining loop, on
one fixed batch of ``B`` whole PassiveTMaze episodes of exactly ``T`` steps (corridor length
``T - 2``, random-policy data). SMT is :func:`smt_rl.smt.losses.smt_loss` (teacher attention and
one application of the memory cell per position); BPTT is :func:`smt_rl.smt.losses.bptt_loss`
(the same cell unrolled over the T steps with gradients). Model sizes are those of
``configs/tmaze.yaml``.

Windowed methods (issue 16) train on episodes of T steps without ever holding one whole:
``smt_window`` is the SMT update of ``model.carry`` (a batch of B windows of ``--window`` steps
drawn from the T-step episodes at cuts whose carried memory is known, the teacher reading it as
prefix tokens, far targets to the episode end; ``context = --window``); ``bptt_window`` is
truncated BPTT on the same windows (the cell unrolled over each window with gradients; carrying a
detached state into it would cost the same). Their cost per sample-step is what must not grow
with T.

Every (method, T) runs in a fresh Python process (one torch thread), so that memory figures do
not leak between cases. Per case: ``--warmup`` untimed updates, then the median (and min / max)
of ``--repeats`` timed updates. Memory:

- CPU: peak resident-set growth. The kernel's high-water mark (``VmHWM``) is reset
  (``/proc/self/clear_refs``) after data, model and optimiser are set up; the figure is the
  peak over the warm-up and timed updates minus the resident set at that point. (Falls back to
  ``ru_maxrss`` growth where ``clear_refs`` is not writable.)
- CUDA: ``torch.cuda.max_memory_allocated`` over the updates minus the memory allocated before.
- Both: ``saved_mib``, the bytes autograd keeps for the backward pass (distinct storages seen by
  ``saved_tensors_hooks`` during one forward): the activation memory the method needs,
  independent of the allocator.

Usage::

    python benchmarks/update_cost_vs_length.py [--lengths 64 256 1024] [--batch-size 16]
        [--repeats 5] [--warmup 2] [--device auto] [--out benchmarks/results/...json]
        [--methods smt bptt smt_window bptt_window] [--window 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model

from agents.config import TrainConfig
from agents.pipeline import collect
from smt_rl.config import load_config
from smt_rl.data import TrajectoryDataset
from smt_rl.device import autocast, resolve_device
from smt_rl.models.common import rms_normalize
from smt_rl.smt.carry import CarriedMemoryCache, ChainedWindowSampler
from smt_rl.smt.losses import bptt_loss, smt_loss
from smt_rl.smt.model import SMTModel

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tmaze.yaml"
ENV_ID = "smt_rl/PassiveTMaze-v0"
METHODS = ("smt", "bptt", "smt_window", "bptt_window")
MIB = 2**20


# ----------------------------------------------------------------------------- memory helpers


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _ru_maxrss_kib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = (t.device.type, storage.data_ptr())
        seen[key] = max(seen.get(key, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


# ----------------------------------------------------------------------------- one case (worker)


def _window_batch(cfg, dataset: TrajectoryDataset, batch_size: int, window: int):
    """A batch of ``window``-step windows of the dataset's episodes at cuts of a carried-memory
    cache whose every cut is known (random unit-RMS states), and the sampler that reads it."""
    cache = CarriedMemoryCache(
        dataset.episode_lengths, cfg.smt.carry_stride, cfg.model.memory_tokens, cfg.model.token_dim
    )
    cache.known[:] = True
    cache.states.copy_(rms_normalize(torch.randn_like(cache.states)))
    generator = torch.Generator().manual_seed(0)
    sampler = ChainedWindowSampler(
        dataset, torch.arange(dataset.num_episodes), window, cache, 0.5, generator, 0.0
    )
    return sampler.sample(batch_size), sampler


def run_case(
    method: str,
    data: str,
    batch_size: int,
    repeats: int,
    warmup: int,
    device_name: str,
    window: int = 256,
):
    """Time and measure ``method``'s update on one fixed batch; returns a JSON-able dict."""
    torch.set_num_threads(1)
    device = resolve_device(device_name)
    cfg = load_config(TrainConfig, CONFIG)  # the file holds the agent's sections too
    torch.manual_seed(0)
    dataset = TrajectoryDataset(data)
    episode_steps = int(dataset.episode_lengths.max())
    chain = None
    if method.endswith("_window"):
        updates = {"carry": method == "smt_window", "context": window}
        cfg.model = cfg.model.model_copy(update=updates)
        cfg.smt = cfg.smt.model_copy(update={"carry_stride": min(64, window)})
        batch, chain = _window_batch(cfg, dataset, batch_size, window)
    else:
        # the same batch for both methods: same dataset, same generator seed
        batch = dataset.sample_episodes(batch_size, generator=torch.Generator().manual_seed(0))
    batch = batch.to(device)
    steps = int(batch.shape[1])
    model = SMTModel(cfg.model, dataset.observation_space, dataset.action_space).to(device)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.smt.lr, weight_decay=cfg.smt.weight_decay)
    generator = torch.Generator().manual_seed(0)

    def forward():
        with autocast(device):
            if method == "smt_window":
                return smt_loss(model, batch, cfg.smt, generator, chain)[0]
            if method == "smt":
                return smt_loss(model, batch, cfg.smt, generator)[0]
            return bptt_loss(model, batch, cfg.smt, generator)[0]

    def update() -> None:
        loss = forward()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.smt.grad_clip)
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # memory baseline: everything set up, no update run yet
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)
    rss_base_kib = _proc_status_kib("VmRSS")
    hwm_reset = _reset_peak_rss() and rss_base_kib is not None
    ru_base_kib = _ru_maxrss_kib()

    for _ in range(warmup):
        update()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        update()
        sync()
        times.append(time.perf_counter() - start)

    result: dict = {}
    if hwm_reset:
        hwm = _proc_status_kib("VmHWM")
        result["peak_rss_growth_mib"] = round((hwm - rss_base_kib) / 1024, 1)
        result["rss_method"] = "VmHWM after clear_refs - VmRSS at baseline"
    else:
        result["peak_rss_growth_mib"] = round((_ru_maxrss_kib() - ru_base_kib) / 1024, 1)
        result["rss_method"] = "ru_maxrss after - ru_maxrss at baseline"
    if device.type == "cuda":
        result["cuda_peak_mib"] = round(
            (torch.cuda.max_memory_allocated(device) - base_alloc) / MIB, 1
        )
    opt.zero_grad(set_to_none=True)
    result["saved_mib"] = round(saved_tensor_bytes(forward) / MIB, 1)

    median = statistics.median(times)
    result.update(
        {
            "method": method,
            "T": episode_steps,
            "steps_per_sample": steps,
            "batch_size": batch_size,
            "device": str(device),
            "repeats": repeats,
            "warmup": warmup,
            "s_per_update": round(median, 5),
            "s_per_update_min": round(min(times), 5),
            "s_per_update_max": round(max(times), 5),
            "us_per_sample_step": round(median / (batch_size * steps) * 1e6, 3),
            "num_params": sum(p.numel() for p in params),
        }
    )
    return result


# ----------------------------------------------------------------------------- driver


def machine_info(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": 1,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def print_table(rows: list[dict], cuda: bool) -> None:
    mem = "CUDA peak MiB" if cuda else "peak RSS growth MiB"
    print(
        f"\n| T | method | steps / sample | s / update (median [min, max]) | us / sample-step "
        f"| {mem} | saved-for-backward MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["T"], METHODS.index(r["method"]))):
        m = r["cuda_peak_mib"] if cuda else r["peak_rss_growth_mib"]
        print(
            f"| {r['T']} | {r['method']} | {r['steps_per_sample']} | {r['s_per_update']:.4f} "
            f"[{r['s_per_update_min']:.4f}, {r['s_per_update_max']:.4f}] | "
            f"{r['us_per_sample_step']:.2f} | {m} | {r['saved_mib']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per case")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--methods", nargs="+", default=["smt", "bptt"], choices=METHODS)
    parser.add_argument(
        "--window", type=int, default=256, help="window of the *_window methods (steps)"
    )
    parser.add_argument("--out", default="benchmarks/results/update_cost_vs_length.json")
    # internal: run one case in this process and print its JSON
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="smt", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.worker:
        row = run_case(
            args.method,
            args.data,
            args.batch_size,
            args.repeats,
            args.warmup,
            args.device,
            args.window,
        )
        print("RESULT " + json.dumps(row))
        return

    for steps in args.lengths:
        if steps < 2:
            parser.error(f"--lengths: T={steps} is too short; an episode has at least 2 steps")
    device = str(resolve_device(args.device))
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.lengths:
            data = Path(tmp) / f"tmaze_T{steps}"
            collect(
                ENV_ID,
                episodes=max(2 * args.batch_size, 16),
                out=data,
                num_envs=8,
                seed=0,
                env_kwargs={"length": steps - 2},
                progress=False,
            )
            for method in args.methods:
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    "--method",
                    method,
                    "--data",
                    str(data),
                    "--batch-size",
                    str(args.batch_size),
                    "--repeats",
                    str(args.repeats),
                    "--warmup",
                    str(args.warmup),
                    "--device",
                    device,
                    "--window",
                    str(args.window),
                ]
                case_start = time.perf_counter()
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"case method={method} T={steps} failed")
                line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
                row = json.loads(line[len("RESULT ") :])
                row["case_wall_s"] = round(time.perf_counter() - case_start, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for steps in args.lengths:
        pair = {r["method"]: r for r in rows if r["T"] == steps}
        if "smt" in pair and "bptt" in pair:
            ratio = pair["bptt"]["s_per_update"] / pair["smt"]["s_per_update"]
            pair["bptt"]["bptt_over_smt_time"] = round(ratio, 3)
    out = {
        "machine": machine_info(device),
        "settings": {
            "config": "configs/tmaze.yaml (model defaults)",
            "env": ENV_ID,
            "lengths": args.lengths,
            "methods": args.methods,
            "window": args.window,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "update": "forward + backward + clip_grad_norm + AdamW step (bf16 autocast on CUDA)",
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print_table(rows, device.startswith("cuda"))
    print(f"\nwall-clock: {out['wall_s']} s; results in {args.out}")


if __name__ == "__main__":
    main()
