"""`smt-rl collect` on the project's real tasks, through the CLI and the Python function."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents import collect
from agents.cli import main
from smt_rl.data import TrajectoryDataset

REPO = Path(__file__).resolve().parents[1]


def test_cli_collects_tmaze_episodes_exactly(tmp_path, capsys):
    out = tmp_path / "tmaze"
    code = main(
        [
            "collect",
            "smt_rl/PassiveTMaze-v0",
            "--episodes",
            "30",
            "--out",
            str(out),
            "--num-envs",
            "4",
            "--seed",
            "1",
            "--env-kwargs",
            '{"length": 5}',
            "--no-progress",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["episodes"] == 30 and printed["steps"] == 30 * 7
    ds = TrajectoryDataset(out)
    assert ds.env_id == "smt_rl/PassiveTMaze-v0" and ds.env_kwargs == {"length": 5}
    assert (ds.episode_lengths == 7).all()  # cue + 5 corridor + junction steps
    successes = [s for c in ds.meta["chunks"] for s in c["successes"]]
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        cue = int(ep["observation"][0, :2].argmax())
        assert ep["observation"][0, cue] == 1  # the cue is shown at step 0 only
        assert (ep["observation"][1:6, 2] == 1).all() and ep["observation"][6, 3] == 1
        reward = ep["next", "reward"]
        assert (reward[:-1] == 0).all()
        assert reward[-1] == (1.0 if int(ep["action"][-1]) == cue else -1.0)
        assert successes[i] == (reward[-1] > 0)
        assert ep["next", "terminated"][-1] and not ep["next", "terminated"][:-1].any()
    assert 0.2 < printed["success_rate"] < 0.8  # a random policy guesses


def test_collect_function_on_minigrid_stores_dict_observations(tmp_path):
    result = collect(
        "MiniGrid-MemoryS7-v0", episodes=3, out=tmp_path / "mg", num_envs=2, progress=False
    )
    ds = TrajectoryDataset(tmp_path / "mg")
    assert result.episodes == ds.num_episodes == 3
    batch = ds.sample_windows(4, 16, generator=torch.Generator().manual_seed(0))
    assert batch["observation", "image"].shape == (4, 16, 7, 7, 3)
    assert batch["observation", "image"].dtype == torch.uint8
    assert batch["observation", "direction"].dtype == torch.int64
    assert all(s is not None for c in ds.meta["chunks"] for s in c["successes"])


def test_collect_function_on_popgym(tmp_path):
    collect("popgym-AutoencodeEasy-v0", episodes=2, out=tmp_path / "pg", progress=False)
    ds = TrajectoryDataset(tmp_path / "pg")
    assert ds.observation_space.__class__.__name__ == "MultiDiscrete"
    assert ds.episode(0)["observation"].shape[1] == 2
    assert ds.meta["chunks"][0]["successes"] is None  # POPGym has no success signal


def test_bad_kwarg_and_unknown_id_fail_before_writing(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(
        [
            "collect",
            "smt_rl/PassiveTMaze-v0",
            "--episodes",
            "2",
            "--out",
            str(out),
            "--env-kwargs",
            '{"lenght": 5}',
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "env.kwargs" in err and "lenght" in err and "length" in err
    code = main(["collect", "smt_rl/PassiveTMase-v0", "--episodes", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "env.id" in err and "PassiveTMaze" in err
    assert not out.exists()


def test_append_from_another_task_is_refused_by_the_cli(tmp_path, capsys):
    out = str(tmp_path / "d")
    args = ["collect", "smt_rl/PassiveTMaze-v0", "--episodes", "2", "--out", out, "--no-progress"]
    assert main([*args, "--env-kwargs", '{"length": 3}']) == 0
    assert main([*args, "--env-kwargs", '{"length": 3}', "--seed", "5"]) == 0
    assert TrajectoryDataset(out).num_episodes == 4
    capsys.readouterr()
    assert main([*args, "--env-kwargs", '{"length": 4}']) == 2
    assert "refusing to append" in capsys.readouterr().err
    assert TrajectoryDataset(out).num_episodes == 4


def test_console_entry_shows_progress(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "collect",
            "smt_rl/PassiveTMaze-v0",
            "--episodes",
            "20",
            "--out",
            str(tmp_path / "d"),
            "--env-kwargs",
            '{"length": 2}',
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "collect" in proc.stderr and "20/20" in proc.stderr  # the progress bar
    assert json.loads(proc.stdout)["episodes"] == 20


def test_invalid_env_kwargs_json_is_a_usage_error(tmp_path, capsys):
    args = ["collect", "smt_rl/PassiveTMaze-v0", "--episodes", "2", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--env-kwargs", "{length: 5}"])
    assert exit_info.value.code == 2
    assert "not valid JSON" in capsys.readouterr().err
