"""Bad input, table-driven: every case expects a clear error (type, and a message naming the
field) and leaves no partial output behind. Loading never runs code from a file."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file

from agents.baselines.gru_ppo import GRUPPOAgent
from agents.baselines.sb3 import RecurrentPPOAgent, SB3PPOAgent
from agents.config import TrainConfig
from agents.pipeline import load_agent, pretrain, train
from agents.smt_ppo import SMTPPO
from smt_rl.checkpoint import CheckpointError
from smt_rl.config import config_from_dict, config_to_dict
from smt_rl.data import TrajectoryDataset, collect_episodes, env_description
from smt_rl.errors import ConfigError, DatasetError, NonFiniteError, SpaceError
from smt_rl.integrations import PretrainedMemory
from smt_rl.smt.config import ModelConfig, PretrainConfig
from smt_rl.smt.model import SMTModel, load_smt_model, save_smt_model
from smt_rl.smt.trainer import load_resume_state

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
DICT = spaces.Dict({"pos": BOX, "n": spaces.Discrete(3)})
TASK = env_description("test/Bad", {}, None)


class _Env(gym.Env):
    """Six-step episodes of zeros. The env whose first reset seed is ``bad_env`` (env i of a
    collection or an agent with seed 0) puts NaN/inf into the observation or the reward of step
    ``at`` of its episode ``bad_episode``."""

    def __init__(
        self, observation_space=BOX, action_space=None, bad=None, at=3, bad_env=1, bad_episode=0
    ):
        self.observation_space = observation_space
        self.action_space = action_space or spaces.Discrete(2)
        self.bad, self.at, self.bad_env, self.bad_episode = bad, at, bad_env, bad_episode
        self.t, self.index, self.episode = 0, None, -1

    def _observation(self, value: float = 0.0):
        pos = np.zeros(2, np.float32)
        pos[1] = value
        if self.observation_space == BOX:
            return pos
        if self.observation_space == DICT:
            return {"pos": pos, "n": 1}
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.index = seed if self.index is None else self.index
        self.t, self.episode = 0, self.episode + 1
        return self._observation(), {}

    def step(self, action):
        self.t += 1
        now = self.index == self.bad_env and self.episode == self.bad_episode and self.t == self.at
        bad = self.bad if now else None
        obs = self._observation({"obs_nan": np.nan, "obs_inf": -np.inf}.get(bad, 0.0))
        reward = {"reward_nan": float("nan"), "reward_inf": float("inf")}.get(bad, 0.0)
        return obs, reward, self.t >= 6, False, {}


def _collect(out: Path, episodes: int = 4, chunk_steps: int = 100_000, **env_kwargs):
    return collect_episodes(
        lambda: _Env(**env_kwargs),
        env=TASK,
        episodes=episodes,
        out=out,
        num_envs=2,
        progress=False,
        chunk_steps=chunk_steps,
    )


def _agent_config(**sections) -> TrainConfig:
    data = {"env": {"num_envs": 2}, "ppo": {"n_steps": 8, "hidden": 16}, "device": "cpu"}
    return config_from_dict(TrainConfig, {**data, "model": TINY, **sections})


def _learn(model_space=BOX, **env_kwargs):
    """SMTPPO on a tiny untrained model for ``model_space``, learning on ``_Env(**env_kwargs)``."""
    model = SMTModel(ModelConfig(**TINY), model_space, spaces.Discrete(2))
    env_fn = lambda: _Env(**env_kwargs)  # noqa: E731
    SMTPPO(model, _agent_config(), env_fn=env_fn, device="cpu").learn(64, False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (empty when the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _no_temp_files(root: Path) -> None:
    temp = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]
    assert not temp, temp


def _nothing_in(path: Path) -> None:
    assert not path.exists() or not any(path.iterdir()), sorted(path.iterdir())


# ---------------------------------------------------------------------- configs and spaces
def _train_overrides(*overrides):
    def case(tmp: Path):
        train("configs/tmaze.yaml", [*overrides, f"out={tmp / 'run'}"], progress=False)

    return case


def _pretrain_overrides(*overrides):
    def case(tmp: Path):
        pretrain("configs/tmaze.yaml", [*overrides, f"out={tmp / 'run'}"], progress=False)

    return case


def _yaml_file(text: str):
    def case(tmp: Path):
        (tmp / "bad.yaml").write_text(text)
        pretrain(tmp / "bad.yaml", [f"out={tmp / 'run'}"], progress=False)

    return case


def _collect_space(**env_kwargs):
    def case(tmp: Path):
        _collect(tmp / "data", **env_kwargs)

    return case


def _learn_space(**env_kwargs):
    def case(tmp: Path):
        _learn(**env_kwargs)

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
        r"smt\.lrr.*Did you mean 'smt\.lr'",
    ),
    "unknown nested key in a YAML file": (
        _yaml_file("smt:\n  updatez: 3\n"),
        ConfigError,
        r"smt\.updatez.*Did you mean 'smt\.updates'",
    ),
    "wrong type": (_train_overrides("smt.updates=many"), ConfigError, r"smt\.updates.*number"),
    "wrong type in a YAML file": (
        _yaml_file("ppo:\n  n_steps: lots\n"),
        ConfigError,
        r"ppo\.n_steps.*expected int",
    ),
    "quoted number": (_yaml_file("smt:\n  lr: '0.1'\n"), ConfigError, r"smt\.lr.*without quotes"),
    "bad choice": (_train_overrides("model.cell=lstm"), ConfigError, r"model\.cell"),
    "negative count": (_train_overrides("ppo.n_steps=-1"), ConfigError, r"ppo\.n_steps.*>= 1"),
    "zero environments": (_train_overrides("env.num_envs=0"), ConfigError, r"env\.num_envs"),
    "zero batch": (_pretrain_overrides("smt.batch_size=0"), ConfigError, r"smt\.batch_size"),
    "negative learning rate": (_pretrain_overrides("smt.lr=-1"), ConfigError, r"smt\.lr.*>= 0"),
    "probability above 1": (
        _train_overrides("ppo.gamma=1.5"),
        ConfigError,
        r"ppo\.gamma.*between 0 and 1",
    ),
    "heads do not divide the width": (
        _pretrain_overrides("model.teacher_width=30", "model.teacher_heads=4"),
        ConfigError,
        r"model\.teacher_width.*model\.teacher_heads",
    ),
    "unknown env kwarg": (_train_overrides("env.kwargs.lenght=5"), ValueError, r"env\.kwargs"),
    "unknown env id": (_train_overrides("env.id=smt_rl/Nope-v0"), ValueError, r"env\.id"),
    "collect zero episodes": (
        lambda tmp: _collect(tmp / "data", episodes=0),
        ConfigError,
        "episodes must be >= 1",
    ),
    "Text observations, collect": (
        _collect_space(observation_space=spaces.Text(5)),
        SpaceError,
        r"observation_space.*Text",
    ),
    "Sequence observations, collect": (
        _collect_space(observation_space=spaces.Sequence(spaces.Discrete(2))),
        SpaceError,
        r"observation_space.*Sequence",
    ),
    "Graph observations, collect": (
        _collect_space(observation_space=spaces.Graph(spaces.Discrete(2), None)),
        SpaceError,
        r"observation_space.*Graph",
    ),
    "Graph observations, model": (
        _model_space(spaces.Graph(spaces.Discrete(2), None)),
        SpaceError,
        r"observation_space.*Graph",
    ),
    "Tuple actions, collect": (
        _collect_space(action_space=spaces.Tuple([spaces.Discrete(2)])),
        SpaceError,
        r"action_space.*Tuple",
    ),
    "Text observations, agent": (
        _learn_space(observation_space=spaces.Text(5)),
        SpaceError,
        r"observation_space.*Text",
    ),
    "Sequence observations, agent": (
        _learn_space(observation_space=spaces.Sequence(spaces.Discrete(2))),
        SpaceError,
        r"observation_space.*Sequence",
    ),
    "Tuple actions, agent": (
        _learn_space(action_space=spaces.Tuple([spaces.Discrete(2)])),
        SpaceError,
        r"action_space.*Tuple",
    ),
    "other observation shape, agent": (
        _learn_space(observation_space=spaces.Box(-1.0, 1.0, (3,), np.float32)),
        SpaceError,
        r"observation_space: the environment has Box.*\(3,\).*but Box.*\(2,\)",
    ),
    "other action space, agent": (
        _learn_space(action_space=spaces.Discrete(3)),
        SpaceError,
        r"action_space: the environment has Discrete\(3\), but Discrete\(2\)",
    ),
}


CONFIG_AND_SPACE_CASES["unknown env id, pretrain"] = (
    _pretrain_overrides("env.id=smt_rl/Nope-v0"),
    ValueError,
    r"env\.id",
)


@pytest.mark.parametrize("case", CONFIG_AND_SPACE_CASES, ids=list(CONFIG_AND_SPACE_CASES))
def test_bad_configs_and_spaces(case, tmp_path):
    call, error, message = CONFIG_AND_SPACE_CASES[case]
    with pytest.raises(error, match=message):
        call(tmp_path)
    _nothing_in(tmp_path / "run")  # not even config.yaml
    _nothing_in(tmp_path / "data")
    _no_temp_files(tmp_path)


# ---------------------------------------------------------------------- NaN and infinity
NONFINITE = {  # env kwargs -> what the message must say (the step, the env, the field)
    "obs NaN": ({"bad": "obs_nan"}, r"^observation is not finite .*env 1, episode step 3"),
    "obs inf": ({"bad": "obs_inf"}, r"^observation is not finite .*env 1, episode step 3"),
    "Dict obs NaN": (
        {"bad": "obs_nan", "observation_space": DICT},
        r"^observation\['pos'\] is not finite .*env 1, episode step 3",
    ),
    "reward NaN": (
        {"bad": "reward_nan"},
        r"^reward is not finite \(nan\) at env 1, episode step 2",
    ),
    "reward inf": (
        {"bad": "reward_inf"},
        r"^reward is not finite \(inf\) at env 1, episode step 2",
    ),
}
FIX = r".*wrap it .*nan_to_num"


@pytest.mark.parametrize("bad", NONFINITE)
def test_nonfinite_env_output_stops_an_append_and_leaves_the_dataset_as_it_was(bad, tmp_path):
    env_kwargs, message = NONFINITE[bad]
    space = env_kwargs.get("observation_space", BOX)
    _collect(tmp_path / "data", observation_space=space)  # a clean collection first
    before = _snapshot(tmp_path / "data")
    with pytest.raises(NonFiniteError, match=message + FIX):
        _collect(tmp_path / "data", **env_kwargs)
    assert _snapshot(tmp_path / "data") == before  # byte for byte, meta.json included
    assert TrajectoryDataset(tmp_path / "data").num_episodes == 4


@pytest.mark.parametrize("bad", ["obs NaN", "reward inf"])
def test_nonfinite_env_output_in_a_new_dataset_leaves_nothing_or_whole_chunks(bad, tmp_path):
    env_kwargs, message = NONFINITE[bad]
    with pytest.raises(NonFiniteError, match=message):
        _collect(tmp_path / "new", **env_kwargs)
    assert not (tmp_path / "new").exists()  # nothing was written: no empty dataset either
    # chunks written before the bad episode stay, whole and readable
    with pytest.raises(NonFiniteError, match=message):
        _collect(tmp_path / "some", episodes=8, chunk_steps=1, bad_episode=2, **env_kwargs)
    _no_temp_files(tmp_path)
    kept = TrajectoryDataset(tmp_path / "some")
    assert kept.num_episodes >= 2 and (kept.episode_lengths == 6).all()
    steps = kept.to_tensordict()
    assert (
        torch.isfinite(steps["observation"]).all() and torch.isfinite(steps["next", "reward"]).all()
    )


@pytest.mark.parametrize("bad", NONFINITE)
def test_nonfinite_env_output_stops_the_agent(bad):
    env_kwargs, message = NONFINITE[bad]
    with pytest.raises(NonFiniteError, match=message + FIX):
        _learn(model_space=env_kwargs.get("observation_space", BOX), **env_kwargs)


# ---------------------------------------------------------------------- datasets
def _with_dataset(tmp: Path) -> None:
    _collect(tmp / "data")


def _with_stray_folder(tmp: Path) -> None:
    (tmp / "data").mkdir()
    (tmp / "data" / "notes.txt").write_text("not a dataset")


def _truncate_a_chunk_file(tmp: Path) -> None:
    _collect(tmp / "data")
    files = sorted((tmp / "data").rglob("*.memmap"))
    files[0].write_bytes(files[0].read_bytes()[:-4])


def _remove_a_chunk(tmp: Path) -> None:
    _collect(tmp / "data", chunk_steps=1)
    for file in sorted((tmp / "data" / "chunks" / "chunk-000001").rglob("*"), reverse=True):
        file.rmdir() if file.is_dir() else file.unlink()
    (tmp / "data" / "chunks" / "chunk-000001").rmdir()


def _corrupt_meta(tmp: Path) -> None:
    _collect(tmp / "data")
    (tmp / "data" / "meta.json").write_text('{"format": "smt_rl.traj')


def _pretrain_on_data(tmp: Path) -> None:
    pretrain("configs/tmaze.yaml", [f"data.path={tmp / 'data'}", f"out={tmp / 'run'}"], False)


def _open(tmp: Path) -> None:
    TrajectoryDataset(tmp / "data")


def _append_other_task(tmp: Path) -> None:
    collect_episodes(
        _Env,
        env=env_description("test/Other", {"x": 1}, None),
        episodes=2,
        out=tmp / "data",
        progress=False,
    )


def _append_other_observations(tmp: Path) -> None:
    _collect(tmp / "data", observation_space=DICT)


DATASET_CASES = {  # (prepare, act, message): act on the folder prepare left
    "truncated chunk file": (_truncate_a_chunk_file, _open, r"truncated: .*\.memmap has \d+ bytes"),
    "missing chunk folder": (_remove_a_chunk, _open, r"truncated: .*chunk-000001 is missing"),
    "corrupt meta.json": (_corrupt_meta, _open, r"meta\.json is corrupt"),
    "dataset of another task, pretrain": (
        _with_dataset,
        _pretrain_on_data,
        r"data\.path .* holds task .*test/Bad",
    ),
    "missing folder, pretrain": (lambda tmp: None, _pretrain_on_data, r"does not exist"),
    "not a dataset, pretrain": (
        _with_stray_folder,
        _pretrain_on_data,
        r"not a smt_rl trajectory dataset \(no meta\.json\)",
    ),
    "append of another task": (_with_dataset, _append_other_task, r"refusing to append"),
    "append with other observations": (
        _with_dataset,
        _append_other_observations,
        r"collected with observation_space",
    ),
    "collect into a non-dataset folder": (
        _with_stray_folder,
        lambda tmp: _collect(tmp / "data"),
        r"is not empty and is not a smt_rl dataset",
    ),
}


@pytest.mark.parametrize("case", DATASET_CASES)
def test_bad_datasets(case, tmp_path):
    prepare, act, message = DATASET_CASES[case]
    prepare(tmp_path)
    before = _snapshot(tmp_path / "data")
    with pytest.raises(DatasetError, match=message):
        act(tmp_path)
    assert _snapshot(tmp_path / "data") == before  # a refused folder is left as it was
    assert not (tmp_path / "run" / "checkpoint").exists()
    assert not (tmp_path / "run" / "summary.json").exists()
    _no_temp_files(tmp_path)


# ---------------------------------------------------------------------- checkpoints
def _smt_checkpoint(folder: Path) -> Path:
    cfg = PretrainConfig(model=ModelConfig(**TINY))
    model = SMTModel(cfg.model, BOX, spaces.Discrete(2))
    return save_smt_model(model, config_to_dict(cfg), folder)


def _smt_agent(folder: Path) -> Path:
    model = SMTModel(ModelConfig(**TINY), BOX, spaces.Discrete(2))
    return SMTPPO(model, _agent_config(), device="cpu").save(folder)


def _baseline(cls: type, algo: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        cfg = _agent_config(algo=algo, gru_ppo={"gru_hidden": 8, "hidden": 8})
        agent = cls(cfg, None, "cpu", observation_space=BOX, action_space=spaces.Discrete(2))
        agent.save(folder)
        return folder

    return build


CHECKPOINT_KINDS = {  # kind -> (build, where its architecture sits in checkpoint.json, loaders)
    "smt_model": (
        _smt_checkpoint,
        ("config", "model", "embed_dim"),
        {"load_smt_model": load_smt_model, "PretrainedMemory": PretrainedMemory.from_checkpoint},
    ),
    "smt_ppo_agent": (
        _smt_agent,
        ("config", "model", "embed_dim"),
        {
            "SMTPPO.load": lambda p: SMTPPO.load(p, device="cpu"),
            "load_agent": lambda p: load_agent(p, device="cpu"),
            "PretrainedMemory": PretrainedMemory.from_checkpoint,
        },
    ),
    "gru_ppo_agent": (
        _baseline(GRUPPOAgent, "gru_ppo"),
        ("config", "gru_ppo", "gru_hidden"),
        {"GRUPPOAgent.load": GRUPPOAgent.load, "load_agent": load_agent},
    ),
    "sb3_ppo_agent": (
        _baseline(SB3PPOAgent, "ppo"),
        ("config", "sb3_ppo", "hidden"),
        {"SB3PPOAgent.load": SB3PPOAgent.load, "load_agent": load_agent},
    ),
}


def _edit_spec(folder: Path, edit: Callable[[dict], None]) -> None:
    spec = json.loads((folder / "checkpoint.json").read_text())
    edit(spec)
    (folder / "checkpoint.json").write_text(json.dumps(spec))


def _rewrite_weights(folder: Path, tensors: dict) -> None:
    """New weights with a matching SHA-256 in checkpoint.json: only later checks can refuse them."""
    save_file(tensors, folder / "model.safetensors")
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    _edit_spec(folder, lambda spec: spec.update(weights_sha256=digest))


def _truncated_weights(folder: Path, arch: tuple) -> Path:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return folder


def _truncated_weights_sha_updated(folder: Path, arch: tuple) -> Path:
    data = (folder / "model.safetensors").read_bytes()[:-100]
    (folder / "model.safetensors").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    _edit_spec(folder, lambda spec: spec.update(weights_sha256=digest))
    return folder


def _missing_weights(folder: Path, arch: tuple) -> Path:
    (folder / "model.safetensors").unlink()
    return folder


def _section(spec: dict, arch: tuple) -> dict:
    for key in arch[:-1]:
        spec = spec[key]
    return spec


def _other_architecture(folder: Path, arch: tuple) -> Path:
    def double(spec):  # the weights were saved with half of it
        _section(spec, arch)[arch[-1]] *= 2

    _edit_spec(folder, double)
    return folder


def _unexpected_tensor(folder: Path, arch: tuple) -> Path:
    tensors = load_file(folder / "model.safetensors")
    _rewrite_weights(folder, {**tensors, "backdoor.weight": torch.zeros(3)})
    return folder


def _corrupt_description(folder: Path, arch: tuple) -> Path:
    (folder / "checkpoint.json").write_text("{not json")
    return folder


def _description_without_a_field(folder: Path, arch: tuple) -> Path:
    _edit_spec(folder, lambda spec: spec.pop("observation_space"))
    return folder


def _unsupported_space_in_description(folder: Path, arch: tuple) -> Path:
    _edit_spec(folder, lambda spec: spec.update(observation_space={"type": "Text"}))
    return folder


def _newer_config_key(folder: Path, arch: tuple) -> Path:
    _edit_spec(folder, lambda spec: _section(spec, arch).update(zzz=1))
    return folder


def _another_kind(folder: Path, arch: tuple) -> Path:
    _edit_spec(folder, lambda spec: spec.update(kind="something_else"))
    return folder


def _a_file_not_a_folder(folder: Path, arch: tuple) -> Path:
    return folder / "model.safetensors"


CHECKPOINT_CASES = {
    "truncated weights": (
        _truncated_weights,
        r"model\.safetensors does not match checkpoint\.json \(truncated",
    ),
    "truncated weights, SHA updated": (
        _truncated_weights_sha_updated,
        r"model\.safetensors is not a valid safetensors file",
    ),
    "missing weights": (_missing_weights, r"needs checkpoint\.json and model\.safetensors"),
    "another architecture": (_other_architecture, r"does not fit .*shape mismatch"),
    "unexpected tensor": (_unexpected_tensor, r"unexpected \['backdoor\.weight'\]"),
    "corrupt checkpoint.json": (_corrupt_description, r"checkpoint\.json is corrupt"),
    "checkpoint.json without a field": (
        _description_without_a_field,
        r"checkpoint\.json is incomplete or invalid \(missing key 'observation_space'\)",
    ),
    "unsupported space in checkpoint.json": (
        _unsupported_space_in_description,
        r"checkpoint\.json is incomplete or invalid .*'Text'",
    ),
    "unknown config key in checkpoint.json": (
        _newer_config_key,
        r"checkpoint\.json is incomplete or invalid \(unknown config key '[\w.]*zzz'",
    ),
    "another kind": (_another_kind, r"holds a 'something_else' checkpoint"),
    "a file, not a folder": (
        _a_file_not_a_folder,
        r"is a file; pass the folder|holds no agent checkpoint \(checkpoint\.json missing\)",
    ),
}
# PretrainedMemory reads no kind: it loads any checkpoint that declares where an SMT memory sits
# (so a new agent kind holding one needs no change in the core); see the test after this one
KIND_BLIND = {("another kind", "PretrainedMemory")}
LOAD_CASES = [
    (case, kind, loader)
    for case in CHECKPOINT_CASES
    for kind, (_, _, loaders) in CHECKPOINT_KINDS.items()
    for loader in loaders
    if (case, loader) not in KIND_BLIND
]


@pytest.mark.parametrize(
    ("case", "kind", "loader"), LOAD_CASES, ids=[" - ".join(c) for c in LOAD_CASES]
)
def test_bad_checkpoints(case, kind, loader, tmp_path):
    build, arch, loaders = CHECKPOINT_KINDS[kind]
    damage, message = CHECKPOINT_CASES[case]
    target = damage(build(tmp_path / "checkpoint"), arch)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        loaders[loader](target)
    assert _snapshot(tmp_path) == before  # loading writes nothing


@pytest.mark.parametrize("kind", ["gru_ppo_agent", "sb3_ppo_agent"])
def test_a_pretrained_memory_is_not_loaded_from_a_checkpoint_without_one(kind, tmp_path):
    folder = CHECKPOINT_KINDS[kind][0](tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match=rf"holds a '{kind}' checkpoint, which has no SMT"):
        PretrainedMemory.from_checkpoint(folder)


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_undamaged_checkpoints_load(kind, tmp_path):
    """The damage above is what the loaders refuse, not the checkpoints themselves."""
    build, _, loaders = CHECKPOINT_KINDS[kind]
    folder = build(tmp_path / "checkpoint")
    for load in loaders.values():
        load(folder)


def _with_old_key_names(spec: dict) -> None:
    """checkpoint.json as versions before the DMT sections were renamed wrote it."""
    config = spec["config"]
    offline = config.pop("offline_dmt")
    old_keys = ("updates", "lr", "revert_if_worse")  # what offline DMT had then
    config["smt"].update({f"dmt_{k}": offline[k] for k in old_keys})
    online = config.pop("online_smt")
    config["dmt"] = {
        **config.pop("onpolicy_dmt"),
        "teacher_lr": online["lr"],
        "teacher_updates_per_rollout": 4,  # gone since: dropped when read
        "teacher_batch_episodes": online["batch_size"],
        "teacher_buffer_episodes": online["capacity_episodes"],
        "teacher": "continued" if online["enabled"] else "frozen",
    }


@pytest.mark.parametrize("kind", ["smt_ppo_agent", "gru_ppo_agent", "sb3_ppo_agent"])
def test_checkpoints_of_earlier_versions_load_with_their_renamed_keys(kind, tmp_path):
    build, _, loaders = CHECKPOINT_KINDS[kind]
    folder = build(tmp_path / "checkpoint")
    _edit_spec(folder, _with_old_key_names)
    for load in loaders.values():
        agent = load(folder)
        if hasattr(agent, "cfg"):
            assert agent.cfg.offline_dmt.updates == TrainConfig().offline_dmt.updates
            assert agent.cfg.onpolicy_dmt == TrainConfig().onpolicy_dmt
            assert agent.cfg.online_smt == TrainConfig().online_smt


# ---------------------------------------------------------------------- no code from files
class _Exploit:
    """Unpickling it creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_is_refused_everywhere_and_never_runs(tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Exploit(proof)))
    assert proof.exists()  # the payload does run when unpickled
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Exploit(marker))
    # 1. the pickle in place of the weights, with a description that vouches for it
    planted = _smt_checkpoint(tmp_path / "planted")
    (planted / "model.safetensors").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    _edit_spec(planted, lambda spec: spec.update(weights_sha256=digest))
    # 2. the same in an agent checkpoint
    agent = _smt_agent(tmp_path / "agent")
    torch.save(_Exploit(marker), agent / "model.safetensors")
    digest = hashlib.sha256((agent / "model.safetensors").read_bytes()).hexdigest()
    _edit_spec(agent, lambda spec: spec.update(weights_sha256=digest))
    # 3. bare pickled torch files where a checkpoint folder is expected, and the files themselves
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(_Exploit(marker), bare / "model.pt")
    torch.save({"state_dict": _Exploit(marker)}, bare / "checkpoint.pt")
    loaders = [
        load_smt_model,
        PretrainedMemory.from_checkpoint,
        load_agent,
        lambda p: SMTPPO.load(p, device="cpu"),
        GRUPPOAgent.load,
        SB3PPOAgent.load,
        RecurrentPPOAgent.load,
    ]
    for target in (planted, agent, bare, bare / "model.pt", bare / "checkpoint.pt"):
        for load in loaders:
            with pytest.raises(CheckpointError):
                load(target)
    # 4. a pickle as a pretraining's resume state (a tree file: safetensors + JSON, no pickle)
    run = tmp_path / "run"
    (run / "resume").mkdir(parents=True)
    torch.save({"config": _Exploit(marker)}, run / "resume" / "state.pt")
    with pytest.raises(CheckpointError, match="delete it"):
        load_resume_state(run, PretrainConfig(), "smt")
    assert not marker.exists()
