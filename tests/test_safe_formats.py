"""Nothing the library reads unpickles, and every record it reads is checked field by field.

(a) A planted payload per file kind (dataset chunk, resume states, checkpoint weights,
benchmark.json): the payload does run when unpickled, every reader refuses it with the library's
own error naming the file, and it never runs. (b) Malformed records of every kind: a clear error of
the right type naming the file and the field. (c) The pickle-free tree format of resume states
round-trips exactly.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import math
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import save_file
from tensordict import TensorDict

from agents.cli import main
from agents.config import TrainConfig
from agents.pipeline import _resumed_timesteps, load_agent, pretrain, resume_benchmark
from agents.smt_ppo import SMTPPO
from agents.smt_ppo.loop import read_resume_state
from smt_rl.checkpoint import CheckpointError, open_checkpoint
from smt_rl.config import config_from_dict
from smt_rl.data import TrajectoryDataset, collect_episodes, env_description
from smt_rl.distributed import setup
from smt_rl.errors import ConfigError, DatasetError
from smt_rl.integrations import PretrainedMemory
from smt_rl.smt.config import ModelConfig, PretrainConfig
from smt_rl.smt.model import SMTModel, load_smt_model
from smt_rl.smt.trainer import (
    RESUME_FILE,
    RESUME_VERSION,
    Pretraining,
    _pretrain_identity,
    load_resume_state,
)
from smt_rl.tree_file import load_tree, save_tree

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
OBS = spaces.Dict({"pos": spaces.Box(-1.0, 1.0, (2,), np.float32), "n": spaces.Discrete(3)})
ACT = spaces.Discrete(2)


class _Env(gym.Env):
    """Five-step episodes of a Dict observation: nested levels in every dataset chunk."""

    observation_space, action_space = OBS, ACT

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observation(), {}

    def _observation(self):
        return {"pos": np.full(2, self.t / 10, np.float32), "n": self.t % 3}

    def step(self, action):
        self.t += 1
        return self._observation(), float(action), self.t >= 5, False, {}


class _Exploit:
    """Unpickling it creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _collect(path: Path, episodes: int = 4) -> Path:
    collect_episodes(
        _Env,
        env=env_description("test/Safe", {}, None),
        episodes=episodes,
        out=path,
        num_envs=2,
        progress=False,
        chunk_steps=10,
    )
    return path


def _names(path: Path) -> str:
    """A regex matching ``path`` in a message (``.`` matching newlines too, after it)."""
    return "(?s)" + re.escape(str(path))


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def _agent_config(**sections) -> TrainConfig:
    data = {"env": {"num_envs": 2}, "ppo": {"n_steps": 8, "hidden": 16}, "device": "cpu"}
    return config_from_dict(TrainConfig, {**data, "model": TINY, **sections})


def _agent(experience_dir: Path | None = None, **sections) -> SMTPPO:
    """An SMT agent on a tiny untrained model, learning on ``_Env``."""
    model = SMTModel(ModelConfig(**TINY), OBS, ACT)
    config = _agent_config(**sections)
    return SMTPPO(model, config, env_fn=_Env, device="cpu", experience_dir=experience_dir)


ONLINE = {"enabled": True, "min_episodes": 1, "updates_per_step": 0.1}  # every RL field set


def _online_agent(folder: Path, rl_state: Path) -> SMTPPO:
    """An agent with online SMT whose experience is ``folder/experience``: a copy of the one the
    ``rl_state`` fixture saved beside its state, so that each test resumes from its own."""
    shutil.copytree(rl_state.parent / "experience.saved", folder / "experience")
    return _agent(experience_dir=folder / "experience", online_smt=ONLINE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A clean dataset (two chunks); each test damages its own copy."""
    return _collect(tmp_path_factory.mktemp("data") / "clean")


@pytest.fixture
def data(dataset, tmp_path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "data"))


@pytest.fixture(scope="module")
def rl_state(tmp_path_factory) -> Path:
    """An RL resume state as the PPO x DMT loop writes it (online SMT on: every field set)."""
    path = tmp_path_factory.mktemp("rl") / "rl_state.pt"
    experience = path.parent / "experience"
    _agent(experience_dir=experience, online_smt=ONLINE).learn(
        64, False, resume_path=path, resume_every=1
    )
    shutil.copytree(experience, path.parent / "experience.saved")
    assert path.is_file()
    return path


# =========================================================================================
# (a) planted payloads
CHUNK = Path("chunks") / "chunk-000000"


def _plant_non_tensor(level: Path, marker: Path) -> None:
    """Add a non-tensor entry holding the payload to a chunk level, as tensordict writes one: a
    ``{"type": "NonTensorData"}`` key in the level's meta.json and a folder with a pickle."""
    meta = _json(level / "meta.json")
    source = TensorDict(batch_size=meta["shape"])
    source.set_non_tensor("payload", _Exploit(marker))
    source.memmap(level.parent / ".payload-source")
    written = _json(level.parent / ".payload-source" / "meta.json")
    shutil.move(level.parent / ".payload-source" / "payload", level / "payload")
    shutil.rmtree(level.parent / ".payload-source")
    _write_json(level / "meta.json", {**meta, "payload": written["payload"]})


def _plant_at_root(data: Path, marker: Path) -> Path:
    _plant_non_tensor(data / CHUNK, marker)
    return data / CHUNK / "meta.json"


def _plant_nested(data: Path, marker: Path) -> Path:
    """The extra key declared deep inside the chunk: next/observation/meta.json."""
    _plant_non_tensor(data / CHUNK / "next" / "observation", marker)
    return data / CHUNK / "next" / "observation" / "meta.json"


def _plant_pickle_file(data: Path, marker: Path) -> Path:
    (data / CHUNK / "next" / "other.pickle").write_bytes(pickle.dumps(_Exploit(marker)))
    return data / CHUNK / "next"


def _load_with_tensordict(data: Path) -> None:
    """What the library did before: tensordict's loader on the chunk."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TensorDict.load_memmap(data / CHUNK)


def _unpickle_the_file(data: Path) -> None:
    pickle.loads((data / CHUNK / "next" / "other.pickle").read_bytes())


PLANTED_CHUNKS = {  # plant(data, marker) -> the file to name; proof(data): runs the payload
    "non-tensor entry": (_plant_at_root, _load_with_tensordict, "declares keys .*'payload'"),
    "non-tensor entry, nested": (_plant_nested, _load_with_tensordict, "'payload'"),
    "extra pickle file": (_plant_pickle_file, _unpickle_the_file, r"\['other\.pickle'\]"),
}


def _dataset_readers(tmp: Path) -> dict[str, Callable[[Path], Any]]:
    """Every way the library opens a dataset (the CLI as a user runs it: its refusal, printed,
    becomes the DatasetError here)."""

    def cli(command: str) -> Callable[[Path], None]:
        def run(data: Path) -> None:
            args = ["configs/tmaze.yaml", f"data.path={data}", f"out={tmp / command}"]
            with contextlib.redirect_stderr(io.StringIO()) as stderr:
                code = main([command, *args, "--no-progress"])
            if code != 0:
                raise DatasetError(stderr.getvalue())

        return run

    return {
        "TrajectoryDataset": TrajectoryDataset,
        "pretrain": lambda d: pretrain(
            "configs/tmaze.yaml", [f"data.path={d}", f"out={tmp / 'run'}"], False
        ),
        "smt-rl pretrain": cli("pretrain"),
        "smt-rl train": cli("train"),
    }


@pytest.mark.parametrize("case", PLANTED_CHUNKS)
def test_a_chunk_with_a_planted_pickle_is_refused_and_never_runs(case, data, tmp_path):
    plant, proof, message = PLANTED_CHUNKS[case]
    live = Path(shutil.copytree(data, tmp_path / "live"))
    plant(live, tmp_path / "proof")
    proof(live)
    assert (tmp_path / "proof").exists()  # the payload does run when unpickled
    marker = tmp_path / "PWNED"
    named = plant(data, marker)
    for read in _dataset_readers(tmp_path).values():
        with pytest.raises(DatasetError, match=_names(named) + ".*" + message):
            read(data)
    assert not marker.exists()


def _pickled(marker: Path) -> bytes:
    return pickle.dumps({"version": RESUME_VERSION, "config": _Exploit(marker)})


def _torch_saved(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"version": RESUME_VERSION, "config": _Exploit(marker)}, buffer)
    return buffer.getvalue()


PAYLOADS = {  # make(marker) -> bytes; run(bytes): what an unpickling reader would do
    "pickle": (_pickled, pickle.loads),
    "torch.save": (_torch_saved, lambda blob: torch.load(io.BytesIO(blob), weights_only=False)),
}


def _pretrain_readers(path: Path) -> list[Callable[[], Any]]:
    run = path.parents[1]
    return [lambda: load_resume_state(run, PretrainConfig(), "smt")]


def _rl_readers(path: Path) -> list[Callable[[], Any]]:
    return [
        lambda: read_resume_state(path, 64),
        lambda: _resumed_timesteps(path),
        lambda: _agent().learn(64, False, resume_path=path),
    ]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("kind", ["pretraining", "rl"])
def test_a_pickle_as_a_resume_state_is_refused_and_never_runs(kind, payload, tmp_path):
    make, run = PAYLOADS[payload]
    proof = tmp_path / "proof"
    run(make(proof))
    assert proof.exists()
    marker = tmp_path / "PWNED"
    path = tmp_path / "run" / (RESUME_FILE if kind == "pretraining" else "resume/rl_state.pt")
    path.parent.mkdir(parents=True)
    path.write_bytes(make(marker))
    readers = _pretrain_readers(path) if kind == "pretraining" else _rl_readers(path)
    for read in readers:
        with pytest.raises(CheckpointError, match=_names(path) + ".*delete it to start over"):
            read()
    assert not marker.exists()


def test_pickled_weights_with_a_matching_hash_are_refused_and_never_run(tmp_path):
    proof, marker = tmp_path / "proof", tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Exploit(proof)))
    assert proof.exists()
    folder = _agent().save(tmp_path / "checkpoint")
    payload = pickle.dumps(_Exploit(marker))
    (folder / "model.safetensors").write_bytes(payload)
    spec = _json(folder / "checkpoint.json")
    _write_json(folder / "checkpoint.json", {**spec, "weights_sha256": _sha(payload)})
    loaders = [
        open_checkpoint,
        load_smt_model,
        PretrainedMemory.from_checkpoint,
        load_agent,
        lambda p: SMTPPO.load(p, device="cpu"),
    ]
    for load in loaders:
        with pytest.raises(CheckpointError, match=_names(folder / "model.safetensors")):
            load(folder)
    assert not marker.exists()


def test_a_pickle_as_benchmark_json_is_refused_and_never_runs(tmp_path, capsys):
    proof, marker = tmp_path / "proof", tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Exploit(proof)))
    assert proof.exists()
    (tmp_path / "benchmark.json").write_bytes(pickle.dumps(_Exploit(marker)))
    named = _names(tmp_path / "benchmark.json")
    with pytest.raises(ConfigError, match=named + " is corrupt .*smt-rl benchmark SUITE"):
        resume_benchmark(tmp_path)
    assert main(["benchmark", "--resume", str(tmp_path)]) != 0
    assert str(tmp_path / "benchmark.json") in capsys.readouterr().err
    assert not marker.exists()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# =========================================================================================
# (b) malformed records
def _meta_edit(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def damage(data: Path) -> Path:
        meta = _json(data / "meta.json")
        edit(meta)
        _write_json(data / "meta.json", meta)
        return data / "meta.json"

    return damage


def _chunk_edit(level: str, edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def damage(data: Path) -> Path:
        path = data / CHUNK / level / "meta.json"
        meta = _json(path)
        edit(meta)
        _write_json(path, meta)
        return path

    return damage


def _set(*keys_and_value) -> Callable[[dict], None]:
    """An edit setting the value at a key path (ints index lists)."""
    *keys, last, value = keys_and_value

    def edit(record: dict) -> None:
        for key in keys:
            record = record[key]
        record[last] = value

    return edit


def _drop(*keys) -> Callable[[dict], None]:
    *path, last = keys

    def edit(record: dict) -> None:
        for key in path:
            record = record[key]
        del record[last]

    return edit


def _extra_tensor(data: Path) -> Path:
    """An undeclared extra tensor key with its file (no pickle, still not the layout)."""
    path = data / CHUNK / "meta.json"
    meta = _json(path)
    meta["extra"] = dict(meta["action"])
    shutil.copy(data / CHUNK / "action.memmap", data / CHUNK / "extra.memmap")
    _write_json(path, meta)
    return path


def _missing_file(data: Path) -> Path:
    (data / CHUNK / "next" / "reward.memmap").unlink()
    return data / CHUNK / "next" / "reward.memmap"


def _stray_file(data: Path) -> Path:
    (data / CHUNK / "observation" / "notes.txt").write_text("hello")
    return data / CHUNK / "observation"


def _chunk_meta_not_json(data: Path) -> Path:
    (data / CHUNK / "next" / "meta.json").write_text("{not json")
    return data / CHUNK / "next" / "meta.json"


def _non_tensor_for_a_tensor(data: Path) -> Path:
    """A layout key described as a non-tensor entry (no folder needed to be refused)."""
    return _chunk_edit("", _set("action", {"type": "NonTensorData"}))(data)


BAD_META = {  # damage(data) -> file it must name; the message must name the field
    "missing field": (_meta_edit(_drop("num_steps")), r"missing key 'num_steps'"),
    "wrong type": (
        _meta_edit(_set("chunks", 0, "lengths", "5,5")),
        r"chunks\[0\]\.lengths must be a valid list \(got '5,5'\)",
    ),
    "zero length": (
        _meta_edit(_set("chunks", 0, "lengths", 0, 0)),
        r"chunks\[0\]\.lengths\[0\] must be greater than or equal to 1",
    ),
    "lengths do not sum to steps": (
        _meta_edit(lambda m: m["chunks"][0]["lengths"].__setitem__(0, 4)),
        r"chunks\[0\]: lengths sum to \d+, but steps is 10",
    ),
    "one return too many": (
        _meta_edit(lambda m: m["chunks"][0]["returns"].append(1.0)),
        r"chunks\[0\]: returns has 3 entries, but episodes is 2",
    ),
    "totals do not add up": (
        _meta_edit(_set("num_episodes", 5)),
        r"num_episodes / num_steps are 5 / 20, but the chunks hold 4 / 20",
    ),
    "chunk name leaves the folder": (
        _meta_edit(_set("chunks", 1, "name", "../../elsewhere")),
        r"chunks\[1\]\.name must be a chunk name after 'chunk-000000' .*not '\.\./\.\./elsewhere'",
    ),
    "success not a bool": (
        _meta_edit(_set("chunks", 0, "successes", [1, 0])),
        r"chunks\[0\]\.successes\[0\] must be a valid boolean \(got 1\)",
    ),
    "env kwargs not a mapping": (
        _meta_edit(_set("env", "kwargs", [1])),
        r"env\.kwargs must be a valid dictionary",
    ),
    "unknown field": (_meta_edit(_set("extra", 1)), r"unexpected key 'extra'"),
    "unsupported space": (
        _meta_edit(_set("observation_space", {"type": "Text"})),
        r"observation_space: not a space description .*'Text'",
    ),
    "collection count of the wrong type": (
        _meta_edit(_set("collections", 0, "episodes", "4")),
        r"collections\[0\]\.episodes must be a valid integer",
    ),
    "chunk: extra tensor key": (_extra_tensor, r"declares keys a dataset does not hold .*'extra'"),
    "chunk: wrong dtype": (
        _chunk_edit("next", _set("reward", "dtype", "torch.float64")),
        r"'reward' is torch\.float64 .*imply torch\.float32",
    ),
    "chunk: wrong shape": (
        _chunk_edit("observation", _set("pos", "shape", [10, 3])),
        r"'pos' is torch\.float32 of shape \[10, 3\].*shape \[10, 2\]",
    ),
    "chunk: nested tensor": (
        _chunk_edit("", _set("step_count", "is_nested", True)),
        r"'step_count' must describe a tensor",
    ),
    "chunk: non-tensor for a tensor": (
        _non_tensor_for_a_tensor,
        r"'action' must describe a tensor",
    ),
    "chunk: a tensorclass level": (
        _chunk_edit("next", _set("_type", "<class 'mypkg.Evil'>")),
        r"_type is \"<class 'mypkg\.Evil'>\"",
    ),
    "chunk: level of other steps": (
        _chunk_edit("observation", _set("shape", [9])),
        r"shape is \[9\], the dataset's meta\.json says 10 steps",
    ),
    "chunk: a sub-level as a tensor": (
        _chunk_edit("", _set("next", {"device": "cpu", "shape": [10], "dtype": "torch.float32"})),
        r"'next' must be \{'type': 'TensorDict'\}",
    ),
    "chunk: missing file": (_missing_file, r" is missing"),
    "chunk: stray file": (_stray_file, r"holds files a dataset does not \(\['notes\.txt'\]"),
    "chunk: meta.json not JSON": (_chunk_meta_not_json, r"is corrupt"),
}


@pytest.mark.parametrize("case", BAD_META)
def test_malformed_dataset_metadata_is_refused_naming_file_and_field(case, data):
    damage, message = BAD_META[case]
    named = damage(data)
    with pytest.raises(DatasetError, match=_names(named) + ".*" + message):
        TrajectoryDataset(data)


def test_the_clean_dataset_reads_back_without_tensordicts_loader(data):
    ds = TrajectoryDataset(data)
    steps = ds.to_tensordict()
    assert ds.num_steps == 20 and steps["observation", "pos"].dtype == torch.float32
    assert steps["next", "observation", "n"].dtype == torch.int64
    assert (steps["step_count"] == torch.arange(5).repeat(4)).all()
    before = (data / CHUNK / "action.memmap").read_bytes()
    ds._chunks[0]["action"] += 1  # mapped copy-on-write: the file is never written
    assert (data / CHUNK / "action.memmap").read_bytes() == before


def _spec_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        spec = _json(folder / "checkpoint.json")
        edit(spec)
        _write_json(folder / "checkpoint.json", spec)

    return damage


BAD_SPECS = {
    "kind not a string": (_set("kind", 3), r"kind must be a valid string \(got 3\)"),
    "config not a mapping": (_set("config", []), r"config must be a valid dictionary"),
    "modules not a list": (_set("modules", "smt"), r"modules must be a valid list"),
    "a module not a string": (_set("modules", 0, 7), r"modules\[0\] must be a valid string"),
    "memory_prefix not a string": (
        _set("memory_prefix", 1),
        r"memory_prefix must be a valid string \(got 1\)",
    ),
    "hash not hex": (
        _set("weights_sha256", "x" * 64),
        r"weights_sha256: String should match pattern",
    ),
    "missing hash": (_drop("weights_sha256"), r"missing key 'weights_sha256'"),
    "negative steps": (_set("num_timesteps", -1), r"num_timesteps must be greater than or equal"),
    "steps as text": (_set("num_timesteps", "12"), r"num_timesteps must be a valid integer"),
    "space not a mapping": (_set("action_space", [2]), r"action_space must be a valid dictionary"),
    "space missing a field": (
        _drop("action_space", "n"),
        r"action_space: not a space description .*missing key 'n'",
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS)
def test_malformed_checkpoint_json_is_refused_naming_file_and_field(case, tmp_path):
    edit, message = BAD_SPECS[case]
    folder = _agent().save(tmp_path / "checkpoint")
    _spec_edit(edit)(folder)
    named = _names(folder / "checkpoint.json") + r" is incomplete or invalid \(" + message
    for load in (open_checkpoint, load_agent, PretrainedMemory.from_checkpoint):
        with pytest.raises(CheckpointError, match=named):
            load(folder)


def test_checkpoint_json_of_another_format_is_refused(tmp_path):
    folder = _agent().save(tmp_path / "checkpoint")
    _spec_edit(_set("format", "other"))(folder)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is not a smt_rl checkpoint"):
        open_checkpoint(folder)


def _pretrain_state(cfg: PretrainConfig) -> dict[str, Any]:
    """A pretraining resume state of an untrained tiny model, as it would be written."""
    model = SMTModel(cfg.model, OBS, ACT)
    return {
        "version": RESUME_VERSION,
        "config": _pretrain_identity(cfg),
        "method": "smt",
        "world_size": 1,
        "phase": 1,
        "runner": None,
        "metrics": {"smt": {"loss/total": 1.0}},
        "dmt_before": None,
        "wall_s": 1.5,
        "log_lines": 0,
        "model": model.state_dict(),
        "generator": [torch.Generator().manual_seed(0).get_state()],
        "torch_rng": [torch.get_rng_state()],
        "cuda_rng": [None],
    }


def _runner_state() -> dict[str, Any]:
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    return {"update": 3, "optimizer": optimizer.state_dict(), "sums": {}, "count": 0, "last": {}}


BAD_PRETRAIN_STATES = {
    "missing field": (_drop("model"), CheckpointError, r"missing key 'model'"),
    "world size as text": (_set("world_size", "1"), CheckpointError, r"world_size must be a valid"),
    "a stream per rank missing": (
        _set("generator", []),
        CheckpointError,
        r"generator has 0 entries, one per rank of world_size 1",
    ),
    "a tensor that is not one": (
        _set("model", "decoder.reward_scale", [1.0]),
        CheckpointError,
        r"model\.decoder\.reward_scale must be an instance of Tensor",
    ),
    "runner without its optimizer": (
        lambda s: s.update(runner={**_runner_state(), "optimizer": {"state": {}}}),
        CheckpointError,
        r"missing key 'runner\.optimizer\.param_groups'",
    ),
    "optimizer state keyed by text": (
        lambda s: s.update(
            runner={**_runner_state(), "optimizer": {"state": {"a": {}}, "param_groups": []}}
        ),
        CheckpointError,
        r"runner\.optimizer\.state.*must be a valid integer",
    ),
    "metrics of the wrong type": (
        _set("metrics", {"smt": [1.0]}),
        CheckpointError,
        r"metrics\.smt must be a valid dictionary",
    ),
    "an earlier layout": (
        _set("version", RESUME_VERSION - 1),
        CheckpointError,
        r"another smt_rl version",
    ),
}


@pytest.mark.parametrize("case", BAD_PRETRAIN_STATES)
def test_malformed_pretraining_resume_state_is_refused(case, tmp_path):
    edit, error, message = BAD_PRETRAIN_STATES[case]
    cfg = PretrainConfig(model=ModelConfig(**TINY))
    state = _pretrain_state(cfg)
    save_tree(tmp_path / RESUME_FILE, state)
    assert load_resume_state(tmp_path, cfg, "smt") is not None  # undamaged, it is read
    edit(state)
    save_tree(tmp_path / RESUME_FILE, state)
    with pytest.raises(error, match=_names(tmp_path / RESUME_FILE) + ".*" + message):
        load_resume_state(tmp_path, cfg, "smt")


def test_a_pretraining_state_that_does_not_fit_the_model_is_refused(tmp_path):
    cfg = PretrainConfig(model=ModelConfig(**TINY), device="cpu", out=str(tmp_path / "run"))
    dataset = TrajectoryDataset(_collect(tmp_path / "data"))
    state = _pretrain_state(cfg)
    state["model"]["decoder.reward_scale"] = torch.zeros(3)
    save_tree(tmp_path / "run" / RESUME_FILE, state)
    message = _names(tmp_path / "run" / RESUME_FILE) + r" does not fit this run.*delete it"
    with pytest.raises(CheckpointError, match=message):
        Pretraining(cfg, dataset, tmp_path / "run", "smt", setup("cpu"), None, False)


def _replaced(key: str, value: Any) -> Callable[[dict], None]:
    return lambda state: state.update({key: value})


BAD_RL_STATES = {  # edit -> message; read by the agent resuming from it
    "missing loop field": (_drop("starts"), r"missing key 'starts'"),
    "returns not numbers": (_replaced("returns", ["a"]), r"returns\[0\] must be a valid number"),
    "another total": (_replaced("total_timesteps", 128), r"written for total_timesteps=128"),
    "missing learner field": (_drop("policy_opt"), r"missing key 'policy_opt'"),
    "modules as a list": (_replaced("modules", []), r"modules must be a valid dictionary"),
    "generator as a list": (
        _replaced("generator", [0]),
        r"generator must be an instance of Tensor",
    ),
    "replay counter as text": (
        _set("dmt", "replay", "next", "3"),
        r"dmt\.replay\.next must be a valid integer",
    ),
    "online SMT debt as text": (
        _set("online_smt", "owed", "x"),
        r"online_smt\.owed must be a valid number",
    ),
    "experience window not counts": (
        _set("experience", "window", ["a"]),
        r"experience\.window\[0\] must be a valid integer",
    ),
    "a weight of another shape": (
        lambda s: s["modules"].update({"policy.critic.0.bias": torch.zeros(7)}),
        r"does not fit this run .*size mismatch for policy\.critic\.0\.bias",
    ),
    "optimizer of another layout": (
        _set("policy_opt", "param_groups", []),
        r"does not fit this run .*parameter groups",
    ),
}


@pytest.mark.parametrize("case", BAD_RL_STATES)
def test_malformed_rl_resume_state_is_refused(case, rl_state, tmp_path):
    edit, message = BAD_RL_STATES[case]
    state = load_tree(rl_state, CheckpointError, "")
    edit(state)
    path = tmp_path / "rl_state.pt"
    save_tree(path, state)
    with pytest.raises(CheckpointError, match=_names(path) + ".*" + message):
        _online_agent(tmp_path, rl_state).learn(64, False, resume_path=path)


def test_the_rl_resume_state_reads_back_and_resumes(rl_state, tmp_path):
    """The undamaged state the tests above damage is read and resumed from."""
    assert _resumed_timesteps(rl_state) == 48
    agent = _online_agent(tmp_path, rl_state).learn(64, False, resume_path=rl_state)
    assert agent.num_timesteps == 64


def test_resumed_timesteps_of_the_wrong_type_are_refused(rl_state, tmp_path):
    state = load_tree(rl_state, CheckpointError, "")
    save_tree(tmp_path / "rl_state.pt", {**state, "num_timesteps": -3})
    message = _names(tmp_path / "rl_state.pt") + r".*num_timesteps must be greater than or equal"
    with pytest.raises(CheckpointError, match=message):
        _resumed_timesteps(tmp_path / "rl_state.pt")


GOOD_START = {"suite": "quick", "overrides": ["out=x"], "seeds": None, "tasks": None}
BAD_STARTS = {
    "missing suite": (
        {k: v for k, v in GOOD_START.items() if k != "suite"},
        r"missing key 'suite'",
    ),
    "overrides as text": ({**GOOD_START, "overrides": "out=x"}, r"overrides must be a valid list"),
    "an override not text": ({**GOOD_START, "overrides": [1]}, r"overrides\[0\] must be a valid"),
    "seeds as text": ({**GOOD_START, "seeds": "3"}, r"seeds must be a valid integer \(got '3'\)"),
    "tasks as text": ({**GOOD_START, "tasks": "t"}, r"tasks must be a valid list \(got 't'\)"),
    "unknown key": ({**GOOD_START, "jobs": 2}, r"unexpected key 'jobs'"),
    "not an object": (["quick"], r"the whole record must be a valid"),
}


@pytest.mark.parametrize("case", BAD_STARTS)
def test_malformed_benchmark_json_is_refused_naming_file_and_field(case, tmp_path):
    started, message = BAD_STARTS[case]
    _write_json(tmp_path / "benchmark.json", GOOD_START)
    assert resume_benchmark(tmp_path) == GOOD_START
    _write_json(tmp_path / "benchmark.json", started)
    named = _names(tmp_path / "benchmark.json") + r" is incomplete or invalid \(" + message
    with pytest.raises(ConfigError, match=named + r".*smt-rl benchmark SUITE"):
        resume_benchmark(tmp_path)


# =========================================================================================
# (c) the tree format
def _trained_optimizers() -> tuple[torch.nn.Module, list[torch.optim.Optimizer]]:
    """A module and two optimizers with state (Adam moments and step, SGD momentum)."""
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    optimizers = [
        torch.optim.AdamW(module[0].parameters(), lr=1e-2),
        torch.optim.SGD(module[1].parameters(), lr=1e-2, momentum=0.9),
    ]
    for _ in range(2):
        module(torch.randn(5, 3)).pow(2).sum().backward()
        for optimizer in optimizers:
            optimizer.step()
    return module, optimizers


def _same(a: Any, b: Any) -> bool:
    """Exactly equal trees: same types (tuple vs list), dtypes, shapes and values (nan too)."""
    if isinstance(a, torch.Tensor):
        same_kind = type(b) is torch.Tensor and (a.dtype, a.shape) == (b.dtype, b.shape)
        return same_kind and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        same_items = all(_same(x, y) for x, y in zip(a, b, strict=False))
        return type(a) is type(b) and len(a) == len(b) and same_items
    return type(a) is type(b) and a == b


def test_tree_round_trips_exactly(tmp_path):
    module, optimizers = _trained_optimizers()
    generator = torch.Generator().manual_seed(7)
    tree = {
        "model": module.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "generator": generator.get_state(),
        "dtypes": {
            str(d): torch.tensor([1, 0, 1]).to(d)
            for d in (
                torch.bool,
                torch.uint8,
                torch.int8,
                torch.int64,
                torch.float64,
                torch.bfloat16,
            )
        },
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "floats": [math.nan, math.inf, -math.inf, -0.0, 1e-300, 0.1],
        "plain": (1, True, None, "text", [], (), {}),
        7: "an int key",
    }
    save_tree(tmp_path / "tree", tree)
    back = load_tree(tmp_path / "tree", CheckpointError, "")
    assert _same(tree, back)


def test_tree_optimizer_states_load_back_and_continue_identically(tmp_path):
    module, optimizers = _trained_optimizers()
    save_tree(
        tmp_path / "tree",
        {"model": module.state_dict(), "opt": [o.state_dict() for o in optimizers]},
    )
    back = load_tree(tmp_path / "tree", CheckpointError, "")
    twin, twin_optimizers = _trained_optimizers()
    twin.load_state_dict(back["model"])
    for optimizer, state in zip(twin_optimizers, back["opt"], strict=True):
        optimizer.load_state_dict(state)
    batch = torch.randn(5, 3)
    for m, opts in ((module, optimizers), (twin, twin_optimizers)):
        m.zero_grad()
        m(batch).pow(2).sum().backward()
        for optimizer in opts:
            optimizer.step()
    assert all(
        torch.equal(a, b) for a, b in zip(module.parameters(), twin.parameters(), strict=True)
    )


def test_tree_generator_state_continues_the_same_stream(tmp_path):
    generator = torch.Generator().manual_seed(3)
    torch.rand(5, generator=generator)
    save_tree(tmp_path / "tree", {"generator": generator.get_state()})
    twin = torch.Generator()
    twin.set_state(load_tree(tmp_path / "tree", CheckpointError, "")["generator"])
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=twin))


def test_tree_saves_views_and_shared_tensors_as_copies(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tree = {"base": base, "transposed": base.t(), "row": base[1], "same": [base, base]}
    save_tree(tmp_path / "tree", tree)
    back = load_tree(tmp_path / "tree", CheckpointError, "")
    assert all(torch.equal(tree[k], back[k]) for k in ("base", "transposed", "row"))
    assert back["transposed"].is_contiguous()
    back["base"][0, 0] = 100.0  # copies: writing one changes no other
    assert back["row"][0] == 4.0 and back["same"][0][0, 0] == 0.0
    assert back["same"][0] is not back["same"][1]


def test_tree_dicts_come_back_plain_in_order(tmp_path):
    tree = collections.OrderedDict([("b", 1), ("a", collections.defaultdict(int, x=2))])
    save_tree(tmp_path / "tree", tree)
    back = load_tree(tmp_path / "tree", CheckpointError, "")
    assert type(back) is dict and list(back) == ["b", "a"] and back["a"] == {"x": 2}
    assert type(back["a"]) is dict


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"a": [np.int64(3)]}, r"tree\['a'\]\[0\] is a int64"),
        ({"a": {1.5: 0}}, r"tree\['a'\] has a key 1\.5"),
        ({"dtype": torch.float32}, r"tree\['dtype'\] is a dtype"),
    ],
)
def test_tree_refuses_what_it_cannot_hold(tree, message, tmp_path):
    with pytest.raises(TypeError, match=message):
        save_tree(tmp_path / "tree", tree)
    assert not (tmp_path / "tree").exists()


def _tree_file(metadata: dict[str, str], tensors: dict | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        save_file(tensors or {}, path, metadata=metadata)

    return write


def _truncated(path: Path) -> None:
    save_tree(path, {"x": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:-50])


def _header(tree: str) -> dict[str, str]:
    return {"format": "smt_rl.tree", "version": "1", "tree": tree}


NOT_TREES = {
    "pickle": (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "cannot be read"),
    "torch.save": (lambda p: torch.save({"a": torch.zeros(2)}, p), "cannot be read"),
    "garbage": (lambda p: p.write_bytes(b"\x00" * 40), "cannot be read"),
    "empty file": (lambda p: p.write_bytes(b""), "cannot be read"),
    "truncated": (_truncated, "cannot be read"),
    "plain safetensors": (_tree_file({}, {"a": torch.zeros(2)}), "not a smt_rl state file"),
    "other version": (_tree_file({**_header("1"), "version": "9"}), "not a smt_rl state file"),
    "structure not JSON": (_tree_file(_header("{nope")), "damaged structure"),
    "NaN constant": (_tree_file(_header("[NaN]")), "damaged structure"),
    "unknown tag": (_tree_file(_header('{"object": "os.system"}')), "damaged structure"),
    "missing tensor": (_tree_file(_header('{"tensor": "0"}')), "damaged structure"),
    "unused tensor": (
        _tree_file(_header("1"), {"0": torch.zeros(1)}),
        "tensors its structure does not use",
    ),
    "bad dict entry": (_tree_file(_header('{"dict": [[1.5, 2]]}')), "damaged structure"),
}


@pytest.mark.parametrize("case", NOT_TREES)
def test_a_file_that_is_not_a_tree_raises_the_given_error_naming_it(case, tmp_path):
    write, message = NOT_TREES[case]
    path = tmp_path / "state.pt"
    write(path)
    with pytest.raises(ConfigError, match=_names(path) + f".*{message}.*; do this"):
        load_tree(path, ConfigError, "do this")
