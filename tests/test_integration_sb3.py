"""SMTMemoryWrapper: a pretrained SMT memory makes stable-baselines3's feed-forward algorithms
solve a memory task; the memory it appends is the memory module's own scan; spaces in both
modes, env checkers, other algorithms, clear errors. SMTMemoryVecWrapper, its batched twin: the
same observations as per-env wrappers through SB3's auto-resets, PPO learns on it, save/load."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from example_scripts import load_example
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize
from tensordict import TensorDict

from envs import TMAZE_ID, PassiveTMaze
from smt_rl.checkpoint import CheckpointError
from smt_rl.errors import ConfigError, SpaceError
from smt_rl.integrations import PretrainedMemory, SMTMemoryVecWrapper, SMTMemoryWrapper
from smt_rl.memory import step_inputs
from smt_rl.models import CELLS, StepEncoder

LENGTH = 30
EXAMPLE = load_example("sb3_ppo")
success_rate = EXAMPLE.success_rate  # deterministic episodes ending in success
# the example's PPO settings (short rollouts and horizon for a 32-step episode with one decision
# at its end), smaller nets. All of 12 seeds reached 1.0 within 1024 steps (10 of 12 within 512);
# 2048 is the margin.
PPO_KWARGS = {**EXAMPLE.PPO_KWARGS, "policy_kwargs": {"net_arch": [64, 64]}}
N_ENVS, BUDGET, SEED = 4, 2048, 0


def tmaze() -> gym.Env:
    return gym.make(TMAZE_ID, length=LENGTH)


@pytest.fixture(scope="module")
def memory(tmaze30_checkpoint) -> PretrainedMemory:
    return PretrainedMemory.from_checkpoint(tmaze30_checkpoint)


# ---------------------------------------------------------------------------------- learning
def test_ppo_with_memory_solves_the_tmaze_plain_ppo_cannot(memory):
    wrapped = make_vec_env(
        tmaze,
        n_envs=N_ENVS,
        seed=SEED,
        wrapper_class=SMTMemoryWrapper,
        wrapper_kwargs={"memory": memory},
    )
    smt = PPO("MultiInputPolicy", wrapped, seed=SEED, **PPO_KWARGS)
    # the untrained heads do not read the cue yet: what follows is learned (with this seed)
    before = success_rate(smt, SMTMemoryWrapper(tmaze(), memory), episodes=40)
    assert before <= 0.7, before
    smt.learn(BUDGET)
    plain_env = make_vec_env(tmaze, n_envs=N_ENVS, seed=SEED)
    plain = PPO("MlpPolicy", plain_env, seed=SEED, **PPO_KWARGS).learn(BUDGET)

    smt_rate = success_rate(smt, SMTMemoryWrapper(tmaze(), memory))
    plain_rate = success_rate(plain, tmaze())
    assert smt_rate >= 0.9, (smt_rate, plain_rate)
    assert plain_rate <= 0.7, (smt_rate, plain_rate)


# ------------------------------------------------------------------------- memory semantics
def _scan_inputs(steps: list[tuple[np.ndarray, int, float, bool, int]]) -> TensorDict:
    """Step inputs ``(1, T)`` from ``(observation, prev_action, prev_reward, is_init, t)``."""
    obs, actions, rewards, inits, counts = zip(*steps, strict=True)
    return TensorDict(
        {
            "observation": torch.as_tensor(np.stack(obs))[None],
            "prev_action": torch.tensor(actions, dtype=torch.int64)[None],
            "prev_reward": torch.tensor(rewards, dtype=torch.float32)[None],
            "is_init": torch.tensor(inits)[None],
            "step_count": torch.tensor(counts, dtype=torch.int64)[None],
        },
        batch_size=[1, len(steps)],
    )


def test_appended_memory_is_the_scan_over_the_trajectory(memory):
    env = SMTMemoryWrapper(tmaze(), memory)
    env.action_space.seed(0)
    steps, memories, states = [], [], []
    episodes = []
    for seed, n_steps in ((0, LENGTH + 2), (1, 7)):  # a whole episode, then part of the next
        start = len(steps)
        obs, _ = env.reset(seed=seed)
        steps.append((obs["observation"], 0, 0.0, True, 0))
        memories.append(obs["memory"])
        states.append(env.memory_state)
        for t in range(1, n_steps + 1):
            action = int(env.action_space.sample())
            obs, reward, terminated, _, _ = env.step(action)
            steps.append((obs["observation"], action, float(reward), False, t))
            memories.append(obs["memory"])
            states.append(env.memory_state)
        assert terminated == (n_steps == LENGTH + 2)
        episodes.append((start, len(steps)))

    K, d = memory.memory_shape
    appended = torch.as_tensor(np.stack(memories)).reshape(-1, K, d)
    assert torch.equal(appended, torch.stack(states))
    scanned = memory.scan(_scan_inputs(steps))[0]
    torch.testing.assert_close(appended, scanned, atol=1e-5, rtol=1e-5)
    # the second episode alone, from the initial state: the reset forgot the first one
    start, end = episodes[1]
    alone = memory.scan(_scan_inputs(steps[start:end]))[0]
    torch.testing.assert_close(appended[start:end], alone, atol=1e-5, rtol=1e-5)
    # and the two episodes' memories differ (the cue and the history are in them)
    assert not torch.allclose(appended[episodes[0][1] - 1], appended[end - 1])


# ----------------------------------------------------------------------------------- spaces
@pytest.mark.parametrize("mode", ["dict", "flat"])
def test_spaces_observations_and_env_checkers(memory, mode):
    env = SMTMemoryWrapper(tmaze(), memory, mode=mode)
    z = memory.memory_size
    raw_space = tmaze().observation_space
    obs, _ = env.reset(seed=3)
    if mode == "dict":
        assert env.observation_space == spaces.Dict(
            {
                "observation": raw_space,
                "memory": spaces.Box(-np.inf, np.inf, (z,), np.float32),
            }
        )
        raw, mem = obs["observation"], obs["memory"]
    else:
        box = env.observation_space
        assert isinstance(box, spaces.Box) and box.shape == (4 + z,) and box.dtype == np.float32
        assert np.array_equal(box.low[:4], raw_space.low)
        assert np.array_equal(box.high[:4], raw_space.high)
        assert np.all(np.isneginf(box.low[4:])) and np.all(np.isposinf(box.high[4:]))
        raw, mem = obs[:4], obs[4:]
    assert env.observation_space.contains(obs)
    assert np.array_equal(raw, np.eye(4, dtype=np.float32)[env.unwrapped.cue])
    assert mem.dtype == np.float32 and mem.shape == (z,)
    assert np.array_equal(mem, env.memory_state.reshape(-1).numpy())
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)

    sb3_check_env(env)
    with warnings.catch_warnings():  # gymnasium warns about the memory's infinite bounds
        warnings.simplefilter("ignore", UserWarning)
        gym_check_env(SMTMemoryWrapper(PassiveTMaze(LENGTH), memory, mode=mode))


class DictObsEnv(gym.Env):
    """A do-nothing env with a Dict observation (a Box and a Discrete member)."""

    observation_space = spaces.Dict(
        {"pos": spaces.Box(-1.0, 1.0, (2,), np.float32), "tag": spaces.Discrete(3)}
    )
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return {"pos": np.zeros(2, np.float32), "tag": 1}, {}

    def step(self, action):
        obs = {"pos": np.full(2, 0.5, np.float32), "tag": int(action)}
        return obs, 0.0, False, False, {}


@pytest.fixture(scope="module")
def dict_memory() -> PretrainedMemory:
    """An untrained memory (2 tokens x 8) for :class:`DictObsEnv`."""
    obs_space, act_space = DictObsEnv.observation_space, DictObsEnv.action_space
    encoder = StepEncoder(obs_space, act_space, 16)
    return PretrainedMemory(encoder, CELLS["gated"](2, 8, 16, hidden=32), obs_space, act_space)


def test_dict_observation_gains_a_member_or_flattens(dict_memory):
    env = SMTMemoryWrapper(DictObsEnv(), dict_memory, memory_key="m")
    assert list(env.observation_space.spaces) == ["m", "pos", "tag"]  # flat, no nesting
    assert env.observation_space["m"] == spaces.Box(-np.inf, np.inf, (16,), np.float32)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs["tag"] == 1
    assert env.observation_space.contains(env.step(1)[0])

    flat = SMTMemoryWrapper(DictObsEnv(), dict_memory, mode="flat")
    assert flat.observation_space.shape == (2 + 3 + 16,)  # pos, one-hot tag, memory
    obs, _ = flat.reset(seed=0)
    assert flat.observation_space.contains(obs)
    assert np.array_equal(obs[:5], [0, 0, 0, 1, 0])
    sb3_check_env(flat)


@pytest.mark.parametrize(("algo", "mode"), [(A2C, "dict"), (DQN, "flat")])
def test_other_algorithms_learn_on_the_wrapped_env(tmaze30_checkpoint, algo, mode):
    venv = make_vec_env(
        tmaze,
        n_envs=2 if algo is A2C else 1,
        seed=0,
        wrapper_class=SMTMemoryWrapper,
        wrapper_kwargs={"memory": tmaze30_checkpoint, "mode": mode},  # loaded from the folder
    )
    policy = "MultiInputPolicy" if mode == "dict" else "MlpPolicy"
    kwargs = {"buffer_size": 1_000, "learning_starts": 50} if algo is DQN else {}
    model = algo(policy, venv, seed=0, device="cpu", **kwargs).learn(200)
    assert model.num_timesteps >= 200


# ----------------------------------------------------------------------------------- errors
def test_env_of_another_task_is_refused(memory):
    with pytest.raises(SpaceError, match=r"observation_space.*another task"):
        SMTMemoryWrapper(gym.make("CartPole-v1"), memory)
    other_actions = gym.Wrapper(tmaze())
    other_actions.action_space = spaces.Discrete(3)
    with pytest.raises(SpaceError, match=r"env\.action_space"):
        SMTMemoryWrapper(other_actions, memory)


def test_bad_mode_and_key_clashes_are_refused(memory, dict_memory):
    with pytest.raises(ConfigError, match=r"mode.*'dict'.*'flat'"):
        SMTMemoryWrapper(tmaze(), memory, mode="stack")
    with pytest.raises(ConfigError, match="memory_key"):
        SMTMemoryWrapper(DictObsEnv(), dict_memory, memory_key="tag")
    with pytest.raises(ConfigError, match="memory_key"):
        SMTMemoryWrapper(tmaze(), memory, memory_key="observation")


def test_path_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError):
        SMTMemoryWrapper(tmaze(), tmp_path)
    with pytest.raises(CheckpointError):
        SMTMemoryWrapper(tmaze(), tmp_path / "missing")


def test_step_before_reset_is_refused(memory):
    env = SMTMemoryWrapper(tmaze(), memory)
    with pytest.raises(ResetNeeded):
        env.step(0)
    with pytest.raises(ResetNeeded):
        _ = env.memory_state


# ---------------------------------------------------------------- batched: SMTMemoryVecWrapper
def _tmaze_fns() -> list:
    """Four T-mazes whose episodes end at different steps (one truncated by a time limit)."""
    fns = [lambda n=n: gym.make(TMAZE_ID, length=n) for n in (3, 5, 4)]
    return [*fns, lambda: gym.make(TMAZE_ID, length=8, max_episode_steps=6)]


def _dict_obs_fns() -> list:
    return [lambda n=n: gym.wrappers.TimeLimit(DictObsEnv(), n) for n in (2, 3, 4)]


def _assert_same_obs(got, expected) -> None:
    """Same structure; float members equal up to float rounding, the others exactly."""
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            _assert_same_obs(got[key], expected[key])
        return
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected))


def _compare_rollouts(env_fns: list, memory: PretrainedMemory, mode: str, steps: int) -> int:
    """Step the batched wrapper and per-env wrappers with the same random actions; assert the
    same observations, rewards, dones and terminal observations. Returns the episodes ended."""
    batched = SMTMemoryVecWrapper(DummyVecEnv(env_fns), memory, mode=mode)
    wrapped = [lambda f=f: SMTMemoryWrapper(f(), memory, mode=mode) for f in env_fns]
    single = DummyVecEnv(wrapped)
    assert batched.observation_space == single.observation_space
    batched.seed(7)
    single.seed(7)
    rng = np.random.default_rng(0)
    obs = batched.reset()
    _assert_same_obs(obs, single.reset())
    K, d = memory.memory_shape
    ended = 0
    for _ in range(steps):
        actions = rng.integers(0, 2, size=len(env_fns))
        obs, rewards, dones, infos = batched.step(actions)
        obs_s, rewards_s, dones_s, infos_s = single.step(actions)
        _assert_same_obs(obs, obs_s)
        assert np.array_equal(rewards, rewards_s) and np.array_equal(dones, dones_s)
        for i in np.flatnonzero(dones):
            _assert_same_obs(infos[i]["terminal_observation"], infos_s[i]["terminal_observation"])
            ended += 1
        assert batched.observation_space.contains(_row(obs, 0))
        if mode == "dict":  # what the observations carry is the memory state
            state = batched.memory_state
            assert state.shape == (len(env_fns), K, d)
            assert np.array_equal(obs["memory"], state.reshape(len(env_fns), -1).numpy())
    return ended


def _row(obs, i: int):
    return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]


@pytest.mark.parametrize("mode", ["dict", "flat"])
def test_batched_memory_equals_per_env_wrappers_through_auto_resets(memory, mode):
    ended = _compare_rollouts(_tmaze_fns(), memory, mode, steps=40)
    assert ended >= 20  # episodes of 5 to 10 steps: many resets, at different steps


@pytest.mark.parametrize("mode", ["dict", "flat"])
def test_batched_memory_on_a_dict_observation(dict_memory, mode):
    ended = _compare_rollouts(_dict_obs_fns(), dict_memory, mode, steps=12)  # truncations
    assert ended >= 8


def test_batched_terminal_observation_carries_the_memory_after_the_last_step(memory):
    venv = SMTMemoryVecWrapper(DummyVecEnv([lambda: gym.make(TMAZE_ID, length=2)]), memory)
    venv.reset()
    for _ in range(3):  # cue, corridor, corridor, junction
        obs, _, dones, _ = venv.step(np.array([0]))
    assert not dones[0] and np.array_equal(obs["observation"][0], [0, 0, 0, 1])
    junction = venv.memory_state
    obs, rewards, dones, infos = venv.step(np.array([1]))
    assert dones[0]
    # the terminal observation's memory: one more step, x = (o_terminal, a=1, r, False, t=4)
    terminal = infos[0]["terminal_observation"]
    assert np.array_equal(terminal["observation"], [0, 0, 0, 1]) and abs(rewards[0]) == 1
    inputs = step_inputs(
        torch.as_tensor(terminal["observation"])[None],
        torch.tensor([1]),
        torch.tensor([float(rewards[0])]),
        torch.tensor([4]),
        torch.tensor([False]),
    )
    expected = memory.transition(inputs, junction)[2].reshape(-1)
    torch.testing.assert_close(torch.as_tensor(terminal["memory"]), expected)
    # the new episode's memory restarted: that of a fresh reset with the same cue
    fresh = SMTMemoryWrapper(gym.make(TMAZE_ID, length=2), memory)
    fresh_obs, _ = fresh.reset(options={"cue": int(np.argmax(obs["observation"][0]))})
    assert np.array_equal(obs["observation"][0], fresh_obs["observation"])
    torch.testing.assert_close(obs["memory"][0], fresh_obs["memory"])
    assert venv.memory_state.shape == junction.shape


def test_ppo_learns_the_tmaze_on_the_batched_memory(memory):
    venv = SMTMemoryVecWrapper(make_vec_env(tmaze, n_envs=N_ENVS, seed=SEED), memory)
    model = PPO("MultiInputPolicy", venv, seed=SEED, **PPO_KWARGS)
    before = success_rate(model, SMTMemoryWrapper(tmaze(), memory), episodes=40)
    assert before <= 0.7, before
    model.learn(BUDGET)
    # evaluated on the per-env wrapper: the observations are the same
    rate = success_rate(model, SMTMemoryWrapper(tmaze(), memory))
    assert rate >= 0.9, rate


def _actions_rollout(venv, seed: int = 3, steps: int = 20) -> list:
    venv.seed(seed)
    outputs = [venv.reset()]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        outputs.append(venv.step(rng.integers(0, 2, size=venv.num_envs))[0])
    return outputs


@pytest.mark.parametrize("mode", ["dict", "flat"])
def test_save_load_round_trip_gives_identical_outputs(tmaze30_checkpoint, tmp_path, mode):
    def venv():
        return DummyVecEnv([lambda: gym.make(TMAZE_ID, length=4)] * 2)

    wrapper = SMTMemoryVecWrapper(venv(), tmaze30_checkpoint, mode=mode, memory_key="m")
    wrapper.save(tmp_path / "w")
    files = sorted(str(p.relative_to(tmp_path / "w")) for p in (tmp_path / "w").rglob("*"))
    assert files == [
        "memory",
        "memory/checkpoint.json",
        "memory/model.safetensors",
        "sb3_memory_wrapper.json",
    ]
    loaded = SMTMemoryVecWrapper.load(tmp_path / "w", venv())
    assert (loaded.mode, loaded.memory_key) == (mode, "m")
    assert loaded.observation_space == wrapper.observation_space
    for got, expected in zip(_actions_rollout(loaded), _actions_rollout(wrapper), strict=True):
        if mode == "dict":
            assert all(np.array_equal(got[k], expected[k]) for k in expected)
        else:
            assert np.array_equal(got, expected)
    # with the model: PPO saved and loaded onto the loaded wrapper acts the same
    policy = "MultiInputPolicy" if mode == "dict" else "MlpPolicy"
    model = PPO(policy, wrapper, seed=0, n_steps=16, batch_size=16, device="cpu")
    model.save(tmp_path / "ppo")
    reloaded = PPO.load(tmp_path / "ppo", env=loaded, device="cpu")
    obs = loaded.reset()
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], reloaded.predict(obs, deterministic=True)[0]
    )


def test_save_needs_the_checkpoint_it_was_loaded_from(memory, dict_memory, tmp_path):
    venv = DummyVecEnv([DictObsEnv])
    with pytest.raises(CheckpointError, match=r"PretrainedMemory\.from_checkpoint"):
        SMTMemoryVecWrapper(venv, dict_memory).save(tmp_path / "a")
    # a copy of the checkpoint that changes after the memory was loaded is refused, not saved
    source = tmp_path / "source"
    PretrainedMemory.from_checkpoint(memory.source).save(source)
    copied = PretrainedMemory.from_checkpoint(source)
    (source / "model.safetensors").write_bytes(b"other")
    wrapper = SMTMemoryVecWrapper(DummyVecEnv([tmaze]), copied)
    with pytest.raises(CheckpointError, match="changed or removed since"):
        wrapper.save(tmp_path / "b")
    assert not (tmp_path / "b" / "sb3_memory_wrapper.json").exists()


def test_load_refuses_folders_that_are_not_a_saved_wrapper(memory, tmp_path):
    with pytest.raises(CheckpointError, match="not a saved SMTMemoryVecWrapper"):
        SMTMemoryVecWrapper.load(tmp_path, DummyVecEnv([tmaze]))
    SMTMemoryVecWrapper(DummyVecEnv([tmaze]), memory).save(tmp_path / "w")
    settings = tmp_path / "w" / "sb3_memory_wrapper.json"
    settings.write_text(settings.read_text().replace('"dict"', '"stack"'))
    with pytest.raises(CheckpointError, match=r"sb3_memory_wrapper\.json.*mode"):
        SMTMemoryVecWrapper.load(tmp_path / "w", DummyVecEnv([tmaze]))
    settings.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        SMTMemoryVecWrapper.load(tmp_path / "w", DummyVecEnv([tmaze]))


class _NoTerminalObservation(VecEnvWrapper):
    """A vector env whose infos lose ``terminal_observation`` (not SB3's auto-reset contract)."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs, rewards, dones, [{} for _ in infos]


def test_batched_wrapper_refuses_bad_inputs(memory, dict_memory):
    with pytest.raises(ConfigError, match=r"not a stable-baselines3 VecEnv.*SMTMemoryWrapper"):
        SMTMemoryVecWrapper(tmaze(), memory)
    with pytest.raises(ConfigError, match=r"VecNormalize\(SMTMemoryVecWrapper"):
        SMTMemoryVecWrapper(VecNormalize(DummyVecEnv([tmaze])), memory)
    with pytest.raises(SpaceError, match=r"venv\.observation_space.*another task"):
        SMTMemoryVecWrapper(DummyVecEnv([lambda: gym.make("CartPole-v1")]), memory)
    with pytest.raises(ConfigError, match=r"mode.*'dict'.*'flat'"):
        SMTMemoryVecWrapper(DummyVecEnv([tmaze]), memory, mode="stack")
    with pytest.raises(ConfigError, match="memory_key"):
        SMTMemoryVecWrapper(DummyVecEnv([DictObsEnv]), dict_memory, memory_key="tag")
    with pytest.raises(ConfigError, match="memory_key"):
        SMTMemoryVecWrapper(DummyVecEnv([tmaze]), memory, memory_key="observation")
    venv = SMTMemoryVecWrapper(DummyVecEnv([tmaze]), memory)
    with pytest.raises(ResetNeeded):
        venv.step(np.array([0]))
    with pytest.raises(ResetNeeded):
        _ = venv.memory_state
    short = lambda: gym.make(TMAZE_ID, length=0)  # noqa: E731
    venv = SMTMemoryVecWrapper(_NoTerminalObservation(DummyVecEnv([short])), memory)
    venv.reset()
    venv.step(np.array([0]))
    with pytest.raises(ConfigError, match=r"terminal_observation.*DummyVecEnv"):
        venv.step(np.array([0]))
