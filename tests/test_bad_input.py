"""Bad input, table-driven: every case expects a clear error (type, and a message naming the
field) and leaves no partial output behind. Loading never runs code from a file."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file

from agents.config import TrainConfig
from agents.pipeline import load_agent, pretrain, train
from agents.smt_ppo import SMTPPO
from smt_rl.checkpoint import CheckpointError, save_checkpoint
from smt_rl.config import config_from_dict
from smt_rl.data import TrajectoryDataset, collect_episodes, env_description
from smt_rl.errors import ConfigError, DatasetError, NonFiniteError, SpaceError
from smt_rl.integrations import PretrainedMemory
from smt_rl.smt.config import ModelConfig, PretrainConfig
from smt_rl.smt.model import SMTModel, load_smt_model
from smt_rl.smt.trainer import load_resume_state, model_spec

TINY = {
    "embed_dim": 16,
    "memory_tokens": 2,
    "token_dim": 8,
    "teacher_width": 16,
    "teacher_layers": 1,
    "teacher_heads": 2,
    "decoder_hidden": 16,
    "cell_hidden": 16,
}
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)


class _Env(gym.Env):
    """Six-step episodes; optionally a NaN/inf in the observation or reward of step ``at``."""

    def __init__(self, observation_space=BOX, action_space=None, bad=None, at=3):
        self.observation_space = observation_space
        self.action_space = action_space or spaces.Discrete(2)
        self.bad, self.at, self.t = bad, at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.zeros(2, np.float32), 0.0
        if self.t == self.at:
            if self.bad == "obs_nan":
                obs[1] = np.nan
            elif self.bad == "obs_inf":
                obs[0] = np.inf
            elif self.bad == "reward_nan":
                reward = float("nan")
        return obs, reward, self.t >= 6, False, {}


def _collect(out: Path, **env_kwargs):
    return collect_episodes(
        lambda: _Env(**env_kwargs),
        env=env_description("test/Bad", {}, None),
        episodes=4,
        out=out,
        num_envs=2,
        progress=False,
    )


def _learn(**env_kwargs):
    cfg = config_from_dict(
        TrainConfig, {"env": {"num_envs": 2}, "ppo": {"n_steps": 8}, "device": "cpu"}
    )
    model = SMTModel(ModelConfig(**TINY), BOX, spaces.Discrete(2))
    SMTPPO(model, cfg, env_fn=lambda: _Env(**env_kwargs), device="cpu").learn(64, False)


def _nothing_in(path: Path) -> None:
    assert not path.exists() or not any(path.iterdir()), sorted(path.iterdir())


# ---------------------------------------------------------------------- configs and spaces
def _train_overrides(*overrides):
    def case(tmp: Path):
        train("configs/tmaze.yaml", [*overrides, f"out={tmp / 'run'}"], progress=False)
        _nothing_in(tmp / "run")

    return case


def _collect_space(**env_kwargs):
    def case(tmp: Path):
        _collect(tmp / "data", **env_kwargs)

    return case


def _model_space(observation_space):
    def case(tmp: Path):
        SMTModel(ModelConfig(**TINY), observation_space, spaces.Discrete(2))

    return case


CONFIG_AND_SPACE_CASES = {
    "unknown top-level key": (_train_overrides("no_such_key=1"), ConfigError, "no_such_key"),
    "unknown nested key, suggestion": (
        _train_overrides("smt.lrr=0.1"),
        ConfigError,
        r"smt\.lrr.*smt\.lr",
    ),
    "wrong type": (_train_overrides("smt.updates=many"), ConfigError, r"smt\.updates"),
    "bad choice": (_train_overrides("model.cell=lstm"), ConfigError, r"model\.cell"),
    "unknown env kwarg": (_train_overrides("env.kwargs.lenght=5"), ValueError, r"env\.kwargs"),
    "Text observations": (
        _collect_space(observation_space=spaces.Text(5)),
        SpaceError,
        r"observation_space.*Text",
    ),
    "Sequence observations": (
        _collect_space(observation_space=spaces.Sequence(spaces.Discrete(2))),
        SpaceError,
        r"observation_space.*Sequence",
    ),
    "Graph observations": (
        _model_space(spaces.Graph(spaces.Discrete(2), None)),
        SpaceError,
        r"observation_space.*Graph",
    ),
    "Tuple actions": (
        _collect_space(action_space=spaces.Tuple([spaces.Discrete(2)])),
        SpaceError,
        r"action_space.*Tuple",
    ),
}


@pytest.mark.parametrize("case", CONFIG_AND_SPACE_CASES, ids=list(CONFIG_AND_SPACE_CASES))
def test_bad_configs_and_spaces(case, tmp_path):
    call, error, message = CONFIG_AND_SPACE_CASES[case]
    with pytest.raises(error, match=message):
        call(tmp_path)
    _nothing_in(tmp_path / "run")
    assert not (tmp_path / "data" / "chunks").exists() or not any(
        (tmp_path / "data" / "chunks").iterdir()
    )


# ---------------------------------------------------------------------- NaN and infinity
NONFINITE = {
    "obs_nan": r"observation is not finite .*env 0, episode step 3",
    "obs_inf": r"observation is not finite .*env 0, episode step 3",
    "reward_nan": r"reward is not finite .*env 0, episode step 2",
}


@pytest.mark.parametrize("bad", NONFINITE)
def test_nonfinite_env_output_stops_collection_and_keeps_what_was_written(bad, tmp_path):
    _collect(tmp_path / "data")  # a clean collection first
    before = TrajectoryDataset(tmp_path / "data").to_tensordict()
    with pytest.raises(NonFiniteError, match=NONFINITE[bad] + ".*wrap it"):
        _collect(tmp_path / "data", bad=bad)
    after = TrajectoryDataset(tmp_path / "data")
    assert after.num_episodes == 4 and (after.to_tensordict() == before).all()
    assert not list((tmp_path / "data").rglob(".tmp-*"))


@pytest.mark.parametrize("bad", NONFINITE)
def test_nonfinite_env_output_stops_the_agent(bad):
    with pytest.raises(NonFiniteError, match=NONFINITE[bad]):
        _learn(bad=bad)


# ---------------------------------------------------------------------- datasets
def _truncated_chunk(tmp: Path):
    _collect(tmp / "data")
    files = sorted((tmp / "data").rglob("*.memmap"))
    files[0].write_bytes(files[0].read_bytes()[:-4])
    TrajectoryDataset(tmp / "data")


def _dataset_of_another_task(tmp: Path):
    _collect(tmp / "data")
    pretrain("configs/tmaze.yaml", [f"data.path={tmp / 'data'}", f"out={tmp / 'run'}"], False)


def _missing_dataset(tmp: Path):
    pretrain("configs/tmaze.yaml", [f"data.path={tmp / 'nowhere'}", f"out={tmp / 'run'}"], False)


def _corrupt_meta(tmp: Path):
    _collect(tmp / "data")
    (tmp / "data" / "meta.json").write_text('{"format": "smt_rl.traj')
    TrajectoryDataset(tmp / "data")


DATASET_CASES = {
    "truncated chunk": (_truncated_chunk, r"truncated|re-collect"),
    "another task": (_dataset_of_another_task, r"data\.path.*holds task"),
    "missing folder": (_missing_dataset, r"does not exist"),
    "corrupt meta.json": (_corrupt_meta, r"meta\.json.*corrupt"),
}


@pytest.mark.parametrize("case", DATASET_CASES, ids=list(DATASET_CASES))
def test_bad_datasets(case, tmp_path):
    call, message = DATASET_CASES[case]
    with pytest.raises(DatasetError, match=message):
        call(tmp_path)
    assert not (tmp_path / "run" / "checkpoint").exists()
    assert not (tmp_path / "run" / "summary.json").exists()


# ---------------------------------------------------------------------- checkpoints
def _checkpoint(folder: Path) -> Path:
    cfg = PretrainConfig(model=ModelConfig(**TINY))
    model = SMTModel(cfg.model, BOX, spaces.Discrete(2))
    return save_checkpoint(folder, model, model_spec(model, cfg, {}))


def _rewrite_weights(folder: Path, tensors: dict) -> None:
    save_file(tensors, folder / "model.safetensors")
    spec = json.loads((folder / "checkpoint.json").read_text())
    spec["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "checkpoint.json").write_text(json.dumps(spec))


def _truncated_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _other_architecture(folder: Path) -> None:
    spec = json.loads((folder / "checkpoint.json").read_text())
    spec["model"]["embed_dim"] = 32  # the weights were saved with 16
    (folder / "checkpoint.json").write_text(json.dumps(spec))


def _unexpected_tensor(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    _rewrite_weights(folder, {**tensors, "backdoor.weight": torch.zeros(3)})


def _corrupt_description(folder: Path) -> None:
    (folder / "checkpoint.json").write_text("{not json")


CHECKPOINT_CASES = {
    "truncated weights": (_truncated_weights, r"does not match|truncated"),
    "another architecture": (_other_architecture, r"does not fit.*embed|shape mismatch"),
    "unexpected tensor": (_unexpected_tensor, r"unexpected \['backdoor\.weight'\]"),
    "corrupt checkpoint.json": (_corrupt_description, r"checkpoint\.json.*corrupt"),
}
LOADERS = {
    "load_smt_model": load_smt_model,
    "PretrainedMemory": PretrainedMemory.from_checkpoint,
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=list(CHECKPOINT_CASES))
def test_bad_checkpoints(case, loader, tmp_path):
    folder = _checkpoint(tmp_path / "checkpoint")
    damage, message = CHECKPOINT_CASES[case]
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        LOADERS[loader](folder)


# ---------------------------------------------------------------------- no code from files
class _Exploit:
    """Unpickling it creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_is_refused_everywhere_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Exploit(marker))
    # 1. the pickle in place of the weights, with a description that vouches for it
    planted = _checkpoint(tmp_path / "planted")
    (planted / "model.safetensors").write_bytes(payload)
    spec = json.loads((planted / "checkpoint.json").read_text())
    spec["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (planted / "checkpoint.json").write_text(json.dumps(spec))
    # 2. a bare pickled torch file where a checkpoint folder is expected
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(_Exploit(marker), bare / "model.pt")
    loaders = [
        load_smt_model,
        PretrainedMemory.from_checkpoint,
        load_agent,
        lambda p: SMTPPO.load(p, device="cpu"),
    ]
    for folder in (planted, bare):
        for load in loaders:
            with pytest.raises(CheckpointError):
                load(folder)
    # 3. a pickle as a pretraining's resume state (read with torch.load(weights_only=True))
    run = tmp_path / "run"
    (run / "resume").mkdir(parents=True)
    torch.save({"config": _Exploit(marker)}, run / "resume" / "state.pt")
    with pytest.raises(CheckpointError, match="delete it"):
        load_resume_state(run, PretrainConfig(), "smt")
    assert not marker.exists()
