"""Nothing lost, nothing twice: `smt-rl train` killed (SIGKILL) at chosen points between two
writes, then started again with the same command, ends exactly where an uninterrupted run ends
(summary, every log line, every weight), with no temporary file left behind. The kill points are
the named places of :mod:`smt_rl.faults`; also torn logs, non-finite losses and shape errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smt_rl.errors import NonFiniteError, RunFolderError
from smt_rl.run_logger import RunLogger, drop_log_lines, read_lines, truncate_log

ROOT = Path(__file__).resolve().parents[1]
TINY = [  # a whole `smt-rl train` (collect, pretrain, RL, evaluate) in a few seconds
    "env.kwargs.length=5",
    "env.num_envs=4",
    "data.episodes=64",
    "data.num_envs=4",
    "model.embed_dim=16",
    "model.memory_tokens=2",
    "model.token_dim=8",
    "model.teacher_width=16",
    "model.teacher_layers=1",
    "model.teacher_heads=2",
    "model.decoder_hidden=16",
    "model.cell_hidden=32",
    "smt.updates=30",
    "smt.batch_size=8",
    "smt.log_every=5",
    "smt.eval_every=15",
    "smt.checkpoint_every=10",
    "offline_dmt.updates=10",
    "total_timesteps=1536",
    "ppo.n_steps=32",
    "ppo.resume_every=3",
    "eval.episodes=10",
    "device=cpu",
]
# (kill point, which time it is reached); each one is reached in the run (asserted)
KILLS = [
    ("write.before_rename", 1),  # config.yaml fully written to its temp file, not renamed
    ("data.chunk", 1),  # the dataset's chunk in place, not yet listed in meta.json
    ("log.line", 1),  # the first pretraining line, before the first resume state
    ("resume.saved", 2),  # right after the pretraining's second resume state
    ("log.line", 8),  # in offline DMT, between two resume states
    ("checkpoint.weights", 1),  # the pretrained model's weights written, not its description
    ("rl.rollout", 5),  # in RL, two rollouts after its first resume state
    ("resume.saved", 7),  # right after an RL resume state
    ("write.before_rename", 19),  # the last write: summary.json, not yet renamed
]
NOISY = {"wall_s", "time/wall_s", "time/steps_per_s"}  # the only keys allowed to differ
# online SMT on: the agent's episodes go to RUN_DIR/experience, capacity small enough to evict
ONLINE = [
    "online_smt.enabled=true",
    "online_smt.min_episodes=4",
    "online_smt.updates_per_step=0.02",
    "online_smt.batch_size=4",
    "online_smt.capacity_episodes=60",
]
ONLINE_KILLS = [
    ("rl.rollout", 5),  # two rollouts after the first RL resume state
    ("data.chunk", 5),  # an experience chunk in place, not yet listed
    ("resume.saved", 6),  # right after the second RL resume state (chunks evicted at it)
]


def _train(
    out: Path, kill: str | None = None, extra: list[str] = ()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("SMT_RL_KILL_AT", None)
    if kill:
        env["SMT_RL_KILL_AT"] = kill
    command = [sys.executable, "-m", "agents", "train", "configs/tmaze.yaml", *TINY, *extra]
    command += [f"out={out}", "--no-progress"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _record(run: Path) -> dict:
    """Everything a finished run wrote that must not depend on kills (timings left out)."""

    def clean(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in NOISY and k != "dataset"}

    record = {}
    for name in ("summary.json", "pretrain/summary.json"):
        record[name] = clean(json.loads((run / name).read_text()))
    for name in ("metrics.jsonl", "pretrain/metrics.jsonl"):
        record[name] = [clean(line) for line in read_lines(run / name)]
    for name in ("checkpoint/model.safetensors", "pretrain/checkpoint/model.safetensors"):
        record[name] = {k: v.numpy().tobytes() for k, v in load_file(run / name).items()}
    for name in ("data", "experience"):
        if (run / name).exists():
            meta = json.loads((run / name / "meta.json").read_text())
            record[name] = [(c["name"], c["lengths"]) for c in meta["chunks"]], meta["num_steps"]
    return record


def _leftovers(run: Path) -> list[str]:
    """Temporary files and resume states a finished run must not leave."""
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.name.endswith(".tmp") or p.name.startswith(".tmp-") or p.name == "resume"
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    done = _train(out)
    assert done.returncode == 0, done.stderr[-2000:]
    return _record(out)


@pytest.mark.slow
@pytest.mark.parametrize(("point", "nth"), KILLS, ids=[f"{p}:{n}" for p, n in KILLS])
def test_killed_at_a_point_then_restarted_ends_like_an_uninterrupted_run(
    point, nth, reference, tmp_path
):
    out = tmp_path / "run"
    killed = _train(out, f"{point}:{nth}")
    assert killed.returncode == -9, f"{point}:{nth} was not reached: {killed.stderr[-2000:]}"
    again = _train(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _record(out) == reference
    assert _leftovers(out) == []


@pytest.fixture(scope="module")
def online_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "run"
    done = _train(out, extra=ONLINE)
    assert done.returncode == 0, done.stderr[-2000:]
    return _record(out)


@pytest.mark.slow
@pytest.mark.parametrize(("point", "nth"), ONLINE_KILLS, ids=[f"{p}:{n}" for p, n in ONLINE_KILLS])
def test_killed_with_online_smt_then_restarted_ends_like_an_uninterrupted_run(
    point, nth, online_reference, tmp_path
):
    """The experience on disk (chunks appended and evicted) comes back as it was too."""
    out = tmp_path / "run"
    killed = _train(out, f"{point}:{nth}", ONLINE)
    assert killed.returncode == -9, f"{point}:{nth} was not reached: {killed.stderr[-2000:]}"
    again = _train(out, extra=ONLINE)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _record(out) == online_reference
    assert _leftovers(out) == []


@pytest.mark.slow
def test_killed_twice_in_different_phases(reference, tmp_path):
    out = tmp_path / "run"
    for kill in ("resume.saved:1", "rl.rollout:3"):  # pretraining, then RL of the resumed run
        assert _train(out, kill).returncode == -9
    assert _train(out).returncode == 0
    assert _record(out) == reference


# ---------------------------------------------------------------------- logs
def test_a_torn_last_line_is_dropped_and_a_damaged_one_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"phase": "rl", "step": 1}\n{"phase": "rl", "step": 2}\n{"phase": "rl", "st')
    assert [r["step"] for r in read_lines(path)] == [1, 2]
    logger = RunLogger(tmp_path, tensorboard=False)  # appending repairs the tail first
    assert logger.lines == 2
    logger.log(3, {"x": 1.0}, phase="rl")
    logger.close()
    assert [r["step"] for r in read_lines(path)] == [1, 2, 3]
    assert path.read_text().endswith("\n")
    # a torn line inside its JSON but ended by a newline (the newline got through) is dropped too
    path.write_text('{"phase": "rl", "step": 1}\n{"phase": "rl", "st\n')
    assert drop_log_lines(path, "rl", after=5) is True  # the torn line went
    assert [r["step"] for r in read_lines(path)] == [1]
    path.write_text('{"phase": "rl", "step": 1}\nnot json\n{"phase": "rl", "step": 2}\n')
    with pytest.raises(RunFolderError, match=r"metrics\.jsonl line 2 is not a JSON object"):
        read_lines(path)
    truncate_log(tmp_path / "missing.jsonl", 0)  # nothing to cut: no error, no file
    assert not (tmp_path / "missing.jsonl").exists()


# ---------------------------------------------------------------------- non-finite numbers
def test_a_nan_loss_stops_pretraining_naming_phase_update_and_key(tmp_path, monkeypatch):
    from agents.pipeline import pretrain
    from smt_rl.smt import trainer

    real = trainer.smt_loss

    def poisoned(model, batch, cfg, generator=None, chain=None):
        loss, metrics = real(model, batch, cfg, generator, chain)
        return loss * float("nan"), metrics

    monkeypatch.setattr(trainer, "smt_loss", poisoned)
    overrides = [o for o in TINY if not o.startswith(("total_", "ppo.", "eval."))]
    with pytest.raises(NonFiniteError, match=r"smt phase, update 1: .*Lower smt\.lr"):
        pretrain("configs/tmaze.yaml", [*overrides, f"out={tmp_path / 'run'}"], progress=False)
    weights = tmp_path / "run" / "checkpoint"
    assert not weights.exists()  # no checkpoint of ruined weights


def test_a_nan_loss_stops_ppo_before_the_heads_change():
    from gymnasium import spaces

    from agents.config import PPOConfig
    from agents.policy import ActorCritic
    from agents.smt_ppo.ppo import ppo_update

    policy = ActorCritic(4, spaces.Discrete(2), 8)
    before = [p.clone() for p in policy.parameters()]
    steps = {
        "features": torch.randn(16, 4),
        "action": torch.randint(2, (16,)),
        "logp": torch.full((16,), -0.7),
        "advantage": torch.randn(16),
        "return": torch.full((16,), float("nan")),
    }
    optimizer = torch.optim.Adam(policy.parameters())
    with pytest.raises(NonFiniteError, match=r"PPO update at env step 7: .*ppo\.lr"):
        ppo_update(policy, optimizer, steps, PPOConfig(), torch.Generator(), " at env step 7")
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


def test_non_finite_settings_are_refused():
    from agents.config import TrainConfig
    from smt_rl.config import load_config
    from smt_rl.errors import ConfigError

    for bad in ("smt.lr=.inf", "ppo.lr=.nan", "onpolicy_dmt.lr=-.inf"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(TrainConfig, "configs/tmaze.yaml", [bad])


# ---------------------------------------------------------------------- bad envs, huge models
class _ShapeShifter:
    """An env whose third observation has 3 values instead of 4."""

    def __new__(cls):
        import gymnasium as gym
        from gymnasium import spaces

        class Env(gym.Env):
            observation_space = spaces.Box(-1, 1, (4,), np.float32)
            action_space = spaces.Discrete(2)

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                self.t = 0
                return np.zeros(4, np.float32), {}

            def step(self, action):
                self.t += 1
                shape = 3 if self.t == 3 else 4
                return np.zeros(shape, np.float32), 0.0, self.t >= 6, False, {}

        return Env()


def test_an_observation_of_the_wrong_shape_names_the_space(tmp_path):
    from smt_rl.data import collect_episodes, env_description
    from smt_rl.errors import SpaceError

    with pytest.raises(SpaceError, match=r"step\(\) returned an observation .*observation_space"):
        collect_episodes(
            _ShapeShifter,
            env=env_description("test/ShapeShifter", {}, None),
            episodes=4,
            out=tmp_path / "data",
            num_envs=2,
            progress=False,
        )
    assert not (tmp_path / "data").exists()


def test_a_model_too_large_for_memory_is_refused_before_anything_is_written(tmp_path):
    from agents.pipeline import pretrain, train
    from smt_rl.errors import ConfigError

    for run, big in ((train, "model.cell_hidden=1000000000"), (pretrain, "model.embed_dim=10**9")):
        big = big.replace("10**9", "1000000000")
        with pytest.raises(ConfigError, match=r"parameters .* more than this machine's .*lower"):
            run("configs/tmaze.yaml", [big, f"out={tmp_path / 'run'}"], progress=False)
        assert not (tmp_path / "run").exists()
