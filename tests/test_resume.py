"""A pretraining killed with SIGKILL (twice) and resumed ends exactly where an uninterrupted run
with the same seed ends: same summary, same weights, one metrics line per log step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smt_rl.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "env.kwargs.length=10",
    "smt.updates=240",
    "offline_dmt.updates=120",
    "smt.log_every=5",
    "smt.eval_every=60",
    "smt.checkpoint_every=10",
    "model.embed_dim=32",
    "seed=3",
    "device=cpu",
]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agents", "pretrain", *args, "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _lines(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _run_until_killed(command: list[str], run: Path, phase: str, step: int) -> None:
    """Start ``command``; SIGKILL it once ``metrics.jsonl`` logs ``phase`` at ``step`` or later."""
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if any(x["phase"] == phase and x["step"] >= step for x in _lines(run)):
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()


def test_killed_twice_and_resumed_equals_uninterrupted(tmaze10_dataset, tmp_path):
    dataset = tmaze10_dataset
    common = ["configs/tmaze.yaml", *SETTINGS, f"data.path={dataset}"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(
        _command(*common, f"out={whole}"),
        cwd=ROOT,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )

    _run_until_killed(_command(*common, f"out={killed}"), killed, "smt", 100)
    assert (killed / "resume/state.pt").is_file()
    _run_until_killed(_command("--resume", str(killed)), killed, "dmt", 40)
    subprocess.run(
        _command("--resume", str(killed)),
        cwd=ROOT,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )

    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    for summary in (a, b):
        summary.pop("wall_s")
    assert a == b  # same figures, exactly (CPU, one thread)
    wa = load_file(whole / "checkpoint/model.safetensors")
    wb = load_file(killed / "checkpoint/model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # one log line per log step, none duplicated or missing, same values
    la, lb = _lines(whole), _lines(killed)
    steps = [(x["phase"], x["step"]) for x in lb]
    assert steps == [(x["phase"], x["step"]) for x in la]
    assert len(steps) == len(set(steps)) == 240 // 5 + 120 // 5
    for x, y in zip(la, lb, strict=True):
        assert {k: v for k, v in x.items() if k != "wall_s"} == {
            k: v for k, v in y.items() if k != "wall_s"
        }
    assert not (killed / "resume").exists()  # the state (and stray temp files) are gone


def test_a_resume_state_of_another_config_is_refused(tmaze10_dataset, tmp_path):
    dataset = tmaze10_dataset
    from agents.pipeline import pretrain

    run = tmp_path / "run"
    common = ["configs/tmaze.yaml", *SETTINGS, f"data.path={dataset}", f"out={run}"]
    _run_until_killed(_command(*common), run, "smt", 20)
    with pytest.raises(CheckpointError, match="another config"):
        pretrain(common[0], [*common[1:], "smt.lr=0.01"], progress=False)
    (run / "resume/state.pt").write_bytes(b"\x80\x04 not a torch file")
    with pytest.raises(CheckpointError, match="delete it"):
        pretrain(common[0], common[1:], progress=False)


def test_train_killed_twice_in_its_rl_phase_ends_as_an_uninterrupted_run(tmp_path):
    """The PPO x DMT loop resumes exactly: weights, optimisers, replay, RNG, and the environments
    replayed to where they were; pretraining is not redone."""
    settings = [
        "configs/tmaze.yaml", "env.kwargs.length=5", "data.episodes=200", "smt.updates=40",
        "offline_dmt.updates=10", "smt.eval_every=1000", "ppo.n_steps=32", "ppo.resume_every=2",
        "total_timesteps=8192", "eval.episodes=10", "device=cpu",
    ]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    def train(*args: str) -> list[str]:
        return [sys.executable, "-m", "agents", "train", *args, "--no-progress"]

    subprocess.run(train(*settings, f"out={whole}"), cwd=ROOT, env=_env(), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    _run_until_killed(train(*settings, f"out={killed}"), killed, "rl", 2048)
    pretrained = (killed / "pretrain/summary.json").stat().st_mtime_ns
    assert (killed / "resume/rl_state.pt").is_file()
    _run_until_killed(train("--resume", str(killed)), killed, "rl", 5120)
    subprocess.run(train("--resume", str(killed)), cwd=ROOT, env=_env(), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    assert (killed / "pretrain/summary.json").stat().st_mtime_ns == pretrained  # not redone
    assert not (killed / "resume").exists()

    def timeless(line: dict) -> dict:
        return {k: v for k, v in line.items() if not k.startswith(("time/", "wall_s"))}

    a = timeless(json.loads((whole / "summary.json").read_text()))
    b = timeless(json.loads((killed / "summary.json").read_text()))
    assert a == b  # same evaluation, same step counts, exactly
    la = [timeless(x) for x in _lines(whole) if x["phase"] == "rl"]
    lb = [timeless(x) for x in _lines(killed) if x["phase"] == "rl"]
    assert [x["step"] for x in lb] == [x["step"] for x in la] == list(range(256, 8193, 256))
    assert la == lb
    wa = load_file(whole / "checkpoint/model.safetensors")
    wb = load_file(killed / "checkpoint/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
