"""Adding an algorithm = one new file (agent + config section) and one registry entry: the
pipeline, the config schema, checkpoints and `smt-rl eval` then work for it unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the one new file: a (memoryless, random) agent and its config section
NEW_ALGORITHM = '''
import numpy as np
import torch
from pydantic import Field

from agents.base import AgentBase
from smt_rl.config import ConfigModel, Count


class CoinConfig(ConfigModel):
    """A random policy that flips a coin per action."""

    rollout: Count = Field(32, description="steps per environment between log lines")


class CoinAgent(AgentBase):
    kind = "coin_agent"

    def __init__(self, cfg, env_fn=None, device="cpu", observation_space=None, action_space=None):
        self.cfg, self.env_fn, self.logger = cfg, env_fn, None
        if env_fn is not None:
            env = env_fn()
            observation_space, action_space = env.observation_space, env.action_space
            env.close()
        self.observation_space, self.action_space = observation_space, action_space
        self.bias = torch.nn.Linear(1, 1)  # something to save
        self.num_timesteps = 0
        self.rng = np.random.default_rng(cfg.seed)

    def saved_module(self):
        return self.bias

    def learn(self, total_timesteps, progress_bar=True, resume_path=None):
        while self.num_timesteps < total_timesteps:
            self.num_timesteps += self.cfg.coin.rollout * self.cfg.env.num_envs
            if self.logger is not None:
                self.logger(self.num_timesteps, {"rollout/return_mean": 0.0})
        return self

    def predict(self, observation, state=None, episode_start=None, deterministic=False,
                reward=None):
        n = len(np.asarray(observation)) if np.asarray(observation).ndim > 1 else 1
        return self.rng.integers(self.action_space.n, size=n), state
'''

SCRIPT = """
import json, sys
sys.path.insert(0, {folder!r})
from agents.registry import ALGORITHMS, Algorithm
from coin import CoinConfig
ALGORITHMS["coin"] = Algorithm("coin:CoinAgent", "coin_agent", {{"coin": CoinConfig}}, "coins")

from agents.pipeline import evaluate, train
summary = train("configs/tmaze.yaml", {overrides!r}, progress=False)
print(json.dumps({{"train": summary, "eval": evaluate({out!r}, episodes=10)}}))
"""


def test_a_new_algorithm_needs_one_file_and_one_registry_entry(tmp_path):
    (tmp_path / "coin.py").write_text(textwrap.dedent(NEW_ALGORITHM))
    out = str(tmp_path / "run")
    overrides = [
        "algo=coin",
        "coin.rollout=16",
        "env.kwargs.length=2",
        "total_timesteps=256",
        "eval.episodes=20",
        f"out={out}",
    ]
    script = SCRIPT.format(folder=str(tmp_path), overrides=overrides, out=out)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["train"]["algo"] == "coin"
    assert result["train"]["env_steps"] == 256
    assert 0.2 <= result["train"]["eval/success_rate"] <= 0.8  # a coin at the junction
    assert result["eval"]["eval/episodes"] == 10
    saved = json.loads((Path(out) / "checkpoint" / "checkpoint.json").read_text())
    assert saved["kind"] == "coin_agent" and saved["config"]["coin"]["rollout"] == 16
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 256 // (16 * 8)  # one per rollout of 16 steps x 8 envs
