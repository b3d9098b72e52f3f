"""Logged trajectories: what is written is read back exactly; sampling respects episodes."""

from __future__ import annotations

import functools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from smt_rl.data import TrajectoryDataset, collect_episodes, env_description
from smt_rl.errors import DatasetError


class CountingEnv(gym.Env):
    """Episodes of random length L in [1, max_len]; o_t = [t, L], r_t = 10 t + a_t.

    Every stored value can be predicted from the step index, so read-back checks are exact.
    """

    def __init__(self, max_len: int = 12, dict_obs: bool = False) -> None:
        self.max_len = max_len
        self.dict_obs = dict_obs
        box = spaces.Box(0, 1000, (2,), np.float32)
        self.observation_space = (
            spaces.Dict({"pos": box, "flag": spaces.Discrete(3), "bits": spaces.MultiBinary(3)})
            if dict_obs
            else box
        )
        self.action_space = spaces.Discrete(4)

    def _obs(self):
        vec = np.array([self.t, self.length], dtype=np.float32)
        if not self.dict_obs:
            return vec
        bits = np.array([(self.t >> k) & 1 for k in range(3)], dtype=np.int8)
        return {"pos": vec, "flag": np.int64(self.t % 3), "bits": bits}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.length = int(self.np_random.integers(1, self.max_len + 1))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 10.0 * self.t + float(action)
        self.t += 1
        done = self.t >= self.length
        info = {"success": bool(action == 0)} if done else {}
        return self._obs(), reward, done, False, info


def _collect(path, episodes=20, seed=0, num_envs=3, dict_obs=False, max_len=12, **kw):
    env_fn = functools.partial(CountingEnv, max_len=max_len, dict_obs=dict_obs)
    desc = env_description("test/Counting", {"max_len": max_len, "dict_obs": dict_obs}, None)
    return collect_episodes(
        env_fn,
        env=desc,
        episodes=episodes,
        out=path,
        num_envs=num_envs,
        seed=seed,
        progress=False,
        **kw,
    )


def _pos(td, key="observation"):
    """The [t, L] vector of CountingEnv observations stored under ``key`` (plain or Dict obs)."""
    value = td[key]
    return value if isinstance(value, torch.Tensor) else value["pos"]


def _check_episode(ep):
    """Every field of one stored episode (batch (L,)) agrees with CountingEnv's rules."""
    obs = _pos(ep)
    length = int(obs[0, 1])
    assert ep.batch_size == (length,)
    t = torch.arange(length)
    assert torch.equal(obs[:, 0], t.float())
    assert torch.equal(obs[:, 1], torch.full((length,), float(length)))
    next_obs = _pos(ep, ("next", "observation"))
    assert torch.equal(next_obs[:, 0], (t + 1).float())
    assert torch.equal(ep["next", "reward"], 10.0 * t + ep["action"].float())
    assert torch.equal(ep["step_count"], t)
    assert torch.equal(ep["is_init"], t == 0)
    last = t == length - 1
    assert torch.equal(ep["next", "terminated"], last)
    assert torch.equal(ep["next", "done"], last)
    assert not ep["next", "truncated"].any()
    assert torch.equal(ep["prev_action"][1:], ep["action"][:-1])
    assert torch.equal(ep["prev_reward"][1:], ep["next", "reward"][:-1])
    assert ep["prev_action"][0] == 0 and ep["prev_reward"][0] == 0
    assert ep["mask"].all()


@pytest.mark.parametrize("dict_obs", [False, True])
def test_written_episodes_read_back_exactly(tmp_path, dict_obs):
    result = _collect(tmp_path / "d", episodes=25, dict_obs=dict_obs, chunk_steps=40)
    ds = TrajectoryDataset(tmp_path / "d")
    assert result.episodes == ds.num_episodes == 25
    assert result.steps == ds.num_steps == int(ds.episode_lengths.sum())
    assert len(ds.meta["chunks"]) > 1  # several chunks exercised
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        _check_episode(ep)
        assert int(_pos(ep)[0, 1]) == int(ds.episode_lengths[i])
    if dict_obs:
        ep = ds.episode(0)
        assert ep["observation", "flag"].dtype == torch.int64
        assert ep["observation", "bits"].dtype == torch.int8
        assert torch.equal(ep["observation", "flag"], ep["step_count"] % 3)
    # stored returns and success flags match the data
    returns = [r for c in ds.meta["chunks"] for r in c["returns"]]
    for i in range(ds.num_episodes):
        assert returns[i] == pytest.approx(float(ds.episode(i)["next", "reward"].sum()))
    successes = [s for c in ds.meta["chunks"] for s in c["successes"]]
    assert successes == [bool(ds.episode(i)["action"][-1] == 0) for i in range(ds.num_episodes)]


def test_same_seed_same_data_and_async_matches_sync(tmp_path):
    _collect(tmp_path / "a", episodes=15, seed=3)
    _collect(tmp_path / "b", episodes=15, seed=3)
    _collect(tmp_path / "c", episodes=15, seed=3, vectorization="async")
    a, b, c = (TrajectoryDataset(tmp_path / n).to_tensordict() for n in "abc")
    assert (a == b).all() and (a == c).all()
    d = TrajectoryDataset(_collect(tmp_path / "d", episodes=15, seed=4).path).to_tensordict()
    assert a.batch_size != d.batch_size or not (a == d).all()


def test_append_same_task_and_refuse_other_task(tmp_path):
    _collect(tmp_path / "d", episodes=10, seed=0)
    first = TrajectoryDataset(tmp_path / "d").to_tensordict()
    result = _collect(tmp_path / "d", episodes=6, seed=1)
    ds = TrajectoryDataset(tmp_path / "d")
    assert ds.num_episodes == result.dataset_episodes == 16
    assert (ds.to_tensordict()[: first.shape[0]] == first).all()  # nothing rewritten
    assert [c["seed"] for c in ds.meta["collections"]] == [0, 1]
    for i in range(ds.num_episodes):
        _check_episode(ds.episode(i))
    with pytest.raises(DatasetError, match="refusing to append"):
        _collect(tmp_path / "d", episodes=2, max_len=5)  # other kwargs: another task
    with pytest.raises(DatasetError, match="observation_space"):
        env_fn = functools.partial(CountingEnv, dict_obs=True)
        desc = env_description("test/Counting", {"max_len": 12, "dict_obs": False}, None)
        collect_episodes(env_fn, env=desc, episodes=2, out=tmp_path / "d", progress=False)
    assert TrajectoryDataset(tmp_path / "d").num_episodes == 16  # refused appends wrote nothing


def test_windows_never_cross_episode_boundaries(tmp_path):
    _collect(tmp_path / "d", episodes=40, max_len=20, chunk_steps=50)
    ds = TrajectoryDataset(tmp_path / "d")
    gen = torch.Generator().manual_seed(0)
    batch = ds.sample_windows(256, 8, generator=gen)
    assert batch.batch_size == (256, 8)
    obs, mask = batch["observation"], batch["mask"]
    lengths = ds.episode_lengths[batch["episode"][:, 0]]
    for b in range(256):
        n = int(mask[b].sum())
        assert mask[b, :n].all() and not mask[b, n:].any()  # real steps first, then padding
        t0 = int(obs[b, 0, 0])
        assert n == min(8, int(lengths[b]) - t0)
        assert torch.equal(obs[b, :n, 0], torch.arange(t0, t0 + n).float())  # consecutive
        assert (obs[b, :n, 1] == lengths[b]).all()  # one episode
        assert torch.equal(batch["is_init"][b, :n], obs[b, :n, 0] == 0)
        assert (obs[b, n:] == 0).all() and (batch["action"][b, n:] == 0).all()  # zero padding
        if t0 > 0:  # previous action/reward come from the same episode
            ep = ds.episode(int(batch["episode"][b, 0]))
            assert batch["prev_action"][b, 0] == ep["action"][t0 - 1]
    # full-length windows are the common case when episodes are long enough
    assert mask.all(-1).float().mean() > 0.3


def test_sample_episodes_pads_to_longest(tmp_path):
    _collect(tmp_path / "d", episodes=10)
    ds = TrajectoryDataset(tmp_path / "d")
    batch = ds.sample_episodes(6, generator=torch.Generator().manual_seed(1))
    lengths = ds.episode_lengths[batch["episode"][:, 0]]
    assert batch.shape[1] == int(lengths.max())
    assert torch.equal(batch["mask"].sum(1), lengths)
    assert batch["is_init"][:, 0].all()
    cropped = ds.sample_episodes(6, max_length=2)
    assert cropped.shape[1] <= 2


def test_missing_and_invalid_folders_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        TrajectoryDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a smt_rl trajectory dataset"):
        TrajectoryDataset(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        _collect(tmp_path / "other", episodes=1)


def test_truncated_dataset_gives_clear_error(tmp_path):
    _collect(tmp_path / "d", episodes=10)
    chunk = tmp_path / "d" / "chunks" / "chunk-000000"
    memmap = chunk / "observation.memmap"
    memmap.write_bytes(memmap.read_bytes()[:10])
    with pytest.raises(DatasetError, match="truncated"):
        TrajectoryDataset(tmp_path / "d")
    _collect(tmp_path / "e", episodes=10)
    import shutil

    shutil.rmtree(tmp_path / "e" / "chunks" / "chunk-000000")
    with pytest.raises(DatasetError, match="truncated"):
        TrajectoryDataset(tmp_path / "e")
    meta = tmp_path / "e" / "meta.json"
    meta.write_text(meta.read_text()[:50])
    with pytest.raises(DatasetError, match="corrupt"):
        TrajectoryDataset(tmp_path / "e")


def test_unlisted_chunk_from_killed_append_is_ignored_then_cleaned(tmp_path):
    _collect(tmp_path / "d", episodes=5)
    stray = tmp_path / "d" / "chunks" / ".tmp-deadbeef"
    stray.mkdir()
    (stray / "junk.memmap").write_bytes(b"123")
    assert TrajectoryDataset(tmp_path / "d").num_episodes == 5
    _collect(tmp_path / "d", episodes=5, seed=9)
    assert not stray.exists()
    assert TrajectoryDataset(tmp_path / "d").num_episodes == 10


def test_metadata_records_task_spaces_and_policy(tmp_path):
    _collect(tmp_path / "d", episodes=4, seed=7, num_envs=2)
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["env"] == {
        "id": "test/Counting",
        "kwargs": {"max_len": 12, "dict_obs": False},
        "entry_point": None,
    }
    assert meta["action_space"] == {"type": "Discrete", "n": 4, "start": 0}
    assert meta["observation_space"]["type"] == "Box"
    assert meta["collections"][0]["policy"] == "random"
    assert meta["collections"][0]["seed"] == 7 and meta["collections"][0]["num_envs"] == 2
    assert meta["num_episodes"] == 4
    ds = TrajectoryDataset(tmp_path / "d")
    assert ds.observation_space == CountingEnv().observation_space
    assert ds.action_space == CountingEnv().action_space


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-1, 1, (3,), np.float32),
        spaces.Box(0, 255, (7, 7, 3), np.uint8),
        spaces.Discrete(5, start=2),
        spaces.MultiDiscrete([2, 4], start=[1, 0]),
        spaces.MultiBinary(6),
        spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Dict({"c": spaces.MultiBinary(2)})}),
    ],
)
def test_space_description_round_trips(space):
    from smt_rl.spaces import space_from_dict, space_to_dict

    desc = json.loads(json.dumps(space_to_dict(space)))
    assert space_from_dict(desc) == space


@pytest.mark.parametrize(
    "space",
    [spaces.Text(5), spaces.Tuple([spaces.Discrete(2)]), spaces.Sequence(spaces.Discrete(2))],
)
def test_unsupported_space_is_refused_before_anything_is_written(tmp_path, space):
    from smt_rl.errors import SpaceError

    class Odd(CountingEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = space

    desc = env_description("test/Odd", {}, None)
    with pytest.raises(SpaceError, match="observation_space"):
        collect_episodes(Odd, env=desc, episodes=1, out=tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()
