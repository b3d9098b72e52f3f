"""Tests of the envs package: the passive T-maze, the MiniGrid and POPGym adapters, make_env."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import envs
from envs import (
    MEMORY_TASK_IDS,
    TMAZE_ID,
    MiniGridSymbolic,
    PassiveTMaze,
    POPGymAdapter,
    TaskConfigError,
    UnknownTaskError,
    adapt_space,
    make_env,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MINIGRID_IDS = [i for i in MEMORY_TASK_IDS if i.startswith("MiniGrid-")]
POPGYM_IDS = [i for i in MEMORY_TASK_IDS if i.startswith("popgym-")]
POPGYM_MEDIUM_HARD_IDS = [
    i.replace("Easy", level) for i in POPGYM_IDS for level in ("Medium", "Hard")
]
EPISODE_CAP = 10_000  # longer than any listed task's own episode limit

CORRIDOR = np.array([0, 0, 1, 0], dtype=np.float32)
JUNCTION = np.array([0, 0, 0, 1], dtype=np.float32)


def _check(env: gym.Env) -> None:
    """check_env that fails on any warning except the note that ``env`` is wrapped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    messages = [
        str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)
    ]
    assert messages == []


def _run_random_episode(env: gym.Env, seed: int) -> list[tuple]:
    """One episode of uniformly random actions; returns the (obs, reward, term, trunc, info)s."""
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    env.action_space.seed(seed)
    transitions = []
    for _ in range(EPISODE_CAP):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        transitions.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            return transitions
    raise AssertionError(f"episode did not end within {EPISODE_CAP} steps")


# ---------------------------------------------------------------------------------------------
# Passive T-maze


@pytest.mark.parametrize("length", [0, 1, 50, 1000])
@pytest.mark.parametrize("cue", [0, 1])
@pytest.mark.parametrize("action", [0, 1])
def test_tmaze_episode_is_exact(length: int, cue: int, action: int) -> None:
    """Cue, `length` corridor steps, junction, then +1/-1 for the junction action; L + 2 steps."""
    env = make_env(TMAZE_ID, kwargs={"length": length})
    obs, info = env.reset(seed=0, options={"cue": cue})
    np.testing.assert_array_equal(obs, np.eye(4, dtype=np.float32)[cue])
    assert obs.dtype == np.float32 and info == {"cue": cue}

    n_steps = 0
    for i in range(length):
        # Corridor actions are ignored: use the junction action's opposite on purpose.
        obs, reward, terminated, truncated, info = env.step(1 - action if i % 2 else action)
        n_steps += 1
        np.testing.assert_array_equal(obs, CORRIDOR)
        assert (reward, terminated, truncated, info) == (0.0, False, False, {})
    obs, reward, terminated, truncated, info = env.step(1 - action)
    n_steps += 1
    np.testing.assert_array_equal(obs, JUNCTION)
    assert (reward, terminated, truncated, info) == (0.0, False, False, {})

    obs, reward, terminated, truncated, info = env.step(action)
    n_steps += 1
    success = action == cue
    assert n_steps == length + 2
    assert reward == (1.0 if success else -1.0)
    assert terminated is True and truncated is False
    assert info == {"success": success}
    assert env.observation_space.contains(obs)

    with pytest.raises(ResetNeeded, match="reset"):
        env.step(action)


def test_tmaze_random_cue_follows_seed() -> None:
    """The cue is drawn from np_random: same seed, same cue; both cues occur."""
    env = PassiveTMaze(length=3)
    cues = [env.reset(seed=s)[1]["cue"] for s in range(20)]
    assert set(cues) == {0, 1}
    assert cues == [env.reset(seed=s)[1]["cue"] for s in range(20)]
    obs, info = env.reset(seed=0)
    assert obs.argmax() == info["cue"] == env.cue


@pytest.mark.parametrize("bad", [2, -1, "left", 1.0, True])
def test_tmaze_forced_cue_must_be_0_or_1(bad: object) -> None:
    with pytest.raises(ValueError, match=r"options\['cue'\] must be 0 \(left\) or 1 \(right\)"):
        PassiveTMaze(length=2).reset(options={"cue": bad})


def test_tmaze_rejects_unknown_reset_option() -> None:
    with pytest.raises(ValueError, match=r"unknown option.*'cues'.*accepted options"):
        PassiveTMaze(length=2).reset(options={"cues": 0})


@pytest.mark.parametrize("bad", [-1, 2.5, "10", None, True])
def test_tmaze_bad_length(bad: object) -> None:
    with pytest.raises(ValueError, match=r"`length` must be an integer >= 0"):
        PassiveTMaze(length=bad)  # type: ignore[arg-type]


def test_tmaze_step_needs_reset_and_valid_action() -> None:
    env = PassiveTMaze(length=2)
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be 0 .* or 1"):
        env.step(2)
    env.step(np.int64(1))  # numpy integers are fine


def test_tmaze_very_long_corridor_is_cheap() -> None:
    """Nothing is allocated per corridor step: a billion-step corridor builds instantly."""
    env = PassiveTMaze(length=10**9)
    env.reset(seed=0)
    for _ in range(100):
        obs, reward, terminated, _, _ = env.step(0)
    np.testing.assert_array_equal(obs, CORRIDOR)
    assert reward == 0.0 and not terminated


def test_tmaze_observations_are_fresh_copies() -> None:
    env = PassiveTMaze(length=2)
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(0)
    obs1[:] = 7.0  # must not leak into later observations
    obs2, *_ = env.step(0)
    assert obs2.max() == 1.0 and obs0 is not obs2


def test_registration_is_idempotent() -> None:
    assert gym.spec(TMAZE_ID).entry_point == "envs.tmaze:PassiveTMaze"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        envs.register_envs()
        envs.register_envs()
    assert isinstance(gym.make(TMAZE_ID, length=3).unwrapped, PassiveTMaze)


def test_import_envs_does_not_import_minigrid_or_popgym() -> None:
    code = "import sys, envs; print('minigrid' in sys.modules, 'popgym' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------------
# Every listed memory task


def test_memory_task_ids() -> None:
    assert len(MEMORY_TASK_IDS) == 12 == len(set(MEMORY_TASK_IDS))
    assert MEMORY_TASK_IDS[0] == TMAZE_ID
    assert len(MINIGRID_IDS) == 6 and len(POPGYM_IDS) == 5


@pytest.mark.parametrize("env_id", MEMORY_TASK_IDS)
def test_memory_task_passes_check_env_and_runs_an_episode(env_id: str) -> None:
    env = make_env(env_id)
    assert env.spec is not None and env.spec.id == env_id
    _check(env)
    if env_id == TMAZE_ID:
        _check(env.unwrapped)
    for seed in (0, 1):
        transitions = _run_random_episode(env, seed)
        infos = [t[-1] for t in transitions]
        if env_id.startswith("MiniGrid-"):
            assert all("success" not in i for i in infos[:-1])
            assert isinstance(infos[-1]["success"], bool)
        elif env_id.startswith("popgym-"):
            assert all("success" not in i for i in infos)  # POPGym has no success signal
        else:
            assert isinstance(infos[-1]["success"], bool)
    env.close()


@pytest.mark.parametrize("env_id", POPGYM_MEDIUM_HARD_IDS)
def test_popgym_medium_and_hard_pass_check_env(env_id: str) -> None:
    _check(make_env(env_id))


# ---------------------------------------------------------------------------------------------
# MiniGrid


def test_minigrid_observation_is_image_and_direction() -> None:
    env = make_env("MiniGrid-MemoryS7-v0")
    assert isinstance(env, MiniGridSymbolic)
    # each symbolic channel is bounded by its true range, so the encoder scales it sensibly
    high = np.broadcast_to(np.array([10, 5, 2], np.uint8), (7, 7, 3))
    assert env.observation_space == spaces.Dict(
        {"image": spaces.Box(0, high, (7, 7, 3), np.uint8), "direction": spaces.Discrete(4)}
    )
    assert env.action_space == spaces.Discrete(7)  # full action space by default
    obs, _ = env.reset(seed=0)
    for _ in range(300):  # every observation of a long random walk lies inside those bounds
        assert env.observation_space.contains(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"image", "direction"}
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (7, 7, 3)
    assert type(obs["direction"]) is np.int64
    obs, *_ = env.step(2)
    assert set(obs) == {"image", "direction"}


def _walk_to(env: gym.Env, target: tuple[int, int]) -> list[tuple]:
    """Drive a Memory env's agent (facing east on the middle row) onto cell ``target``."""
    base = env.unwrapped
    transitions = []
    while base.agent_pos[0] < target[0]:
        transitions.append(env.step(2))  # forward, east
    transitions.append(env.step(0 if target[1] < base.agent_pos[1] else 1))  # face north / south
    transitions.append(env.step(2))
    assert tuple(base.agent_pos) == tuple(target)
    return transitions


@pytest.mark.parametrize("env_id", ["MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS13Random-v0"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("matching", [True, False])
def test_minigrid_success_flag(env_id: str, seed: int, matching: bool) -> None:
    """success is True at the matching object (reward > 0) and False at the other one."""
    env = make_env(env_id, kwargs={"movement_only": True})
    env.reset(seed=seed)
    base = env.unwrapped
    transitions = _walk_to(env, base.success_pos if matching else base.failure_pos)
    *before, (_, reward, terminated, truncated, info) = transitions
    assert all(not t[2] and not t[3] and "success" not in t[4] for t in before)
    assert terminated and not truncated
    assert info["success"] is matching
    assert (reward > 0) is matching


def test_minigrid_truncation_is_not_success() -> None:
    """The env's own time-out (max_steps, an env kwarg) and a TimeLimit both give success False."""
    env = make_env("MiniGrid-MemoryS9-v0", kwargs={"max_steps": 5})
    env.reset(seed=0)
    for _ in range(4):
        _, _, terminated, truncated, info = env.step(0)  # turn in place
        assert not (terminated or truncated) and "success" not in info
    _, _, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and info["success"] is False

    env = make_env("MiniGrid-MemoryS9-v0", max_episode_steps=3)
    env.reset(seed=0)
    transitions = [env.step(1) for _ in range(3)]
    assert transitions[-1][3] is True and transitions[-1][4]["success"] is False


def test_minigrid_movement_only() -> None:
    env = make_env("MiniGrid-MemoryS7-v0", kwargs={"movement_only": True, "max_steps": 40})
    assert env.action_space == spaces.Discrete(3)
    assert env.unwrapped.max_steps == 40  # the other kwargs reach the env
    _check(env)
    transitions = _run_random_episode(env, seed=0)
    assert isinstance(transitions[-1][-1]["success"], bool)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be 0 .*1 .*or 2"):
        env.step(3)
    # The wrapper is part of the spec, so the env can be re-made from it.
    remade = env.spec.make()
    assert isinstance(remade, MiniGridSymbolic) and remade.action_space == spaces.Discrete(3)


def test_minigrid_categorical_image_holds_the_same_codes_flat() -> None:
    """categorical=True: the image is a flat MultiDiscrete of the same symbolic codes."""
    plain = make_env("MiniGrid-MemoryS7-v0", kwargs={"movement_only": True})
    flat = make_env("MiniGrid-MemoryS7-v0", kwargs={"movement_only": True, "categorical": True})
    nvec = np.broadcast_to(np.array([11, 6, 3]), (7, 7, 3)).reshape(-1)
    assert flat.observation_space["image"] == spaces.MultiDiscrete(nvec)
    a, _ = plain.reset(seed=3)
    b, _ = flat.reset(seed=3)
    for step in range(60):
        assert flat.observation_space.contains(b)
        np.testing.assert_array_equal(b["image"], a["image"].reshape(-1).astype(np.int64))
        action = step % 3
        a, *_ = plain.step(action)
        b, *_ = flat.step(action)
    assert flat.spec.make().observation_space == flat.observation_space
    with pytest.raises(ValueError, match="categorical"):
        make_env("MiniGrid-MemoryS7-v0", kwargs={"categorical": "yes"})


def test_minigrid_wrapper_rejects_non_minigrid_env() -> None:
    with pytest.raises(ValueError, match=r"'image'.*'direction'"):
        MiniGridSymbolic(PassiveTMaze(length=1))


# ---------------------------------------------------------------------------------------------
# POPGym


def test_popgym_autoencode_tuple_becomes_multidiscrete() -> None:
    env = make_env("popgym-AutoencodeEasy-v0")
    assert isinstance(env, POPGymAdapter)
    assert env.observation_space == spaces.MultiDiscrete([2, 4])
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.int64 and obs.shape == (2,)
    obs, reward, *_ = env.step(0)
    assert obs.dtype == np.int64 and type(reward) is float


def test_popgym_discrete_observation_is_int64() -> None:
    env = make_env("popgym-RepeatFirstEasy-v0")
    assert env.observation_space == spaces.Discrete(4)
    obs, _ = env.reset(seed=0)
    assert type(obs) is np.int64
    obs, *_ = env.step(0)
    assert type(obs) is np.int64


def test_popgym_count_recall_infos_are_copies() -> None:
    """Infos are fresh; no checker warns about the raw env's shared infos, even after a remake."""
    for env in (
        make_env("popgym-CountRecallEasy-v0"),
        make_env("popgym-CountRecallEasy-v0").spec.make(),
    ):
        assert isinstance(env, POPGymAdapter)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, info0 = env.reset(seed=0)
            _, _, _, _, info1 = env.step(0)
        assert info0 is not info1 and info0["counts"] is not info1["counts"]
        assert info0["counts"].sum() == 1 and info1["counts"].sum() == 2  # reset's info intact


class _TupleEnv(gym.Env):
    """A tiny env with a mixed Tuple observation, to test the POPGym space conversion."""

    def __init__(self) -> None:
        self.observation_space = spaces.Tuple(
            (
                spaces.Discrete(3),
                spaces.Box(-1.0, 1.0, (2,), np.float32),
                spaces.Tuple((spaces.Discrete(2), spaces.Discrete(5, start=1))),
            )
        )
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 0, False, False, {}

    def _obs(self):
        box = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return (int(self.np_random.integers(3)), box, (1, 5))


def test_adapt_space_converts_mixed_tuples_to_dicts() -> None:
    space, convert = adapt_space(_TupleEnv().observation_space)
    assert space == spaces.Dict(
        {
            "0": spaces.Discrete(3),
            "1": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "2": spaces.MultiDiscrete([2, 5], start=[0, 1]),
        }
    )
    assert convert is not None
    box = np.zeros(2, np.float32)
    obs = convert((2, box, (1, 5)))
    assert type(obs["0"]) is np.int64 and obs["1"] is box
    np.testing.assert_array_equal(obs["2"], [1, 5])
    assert space.contains(obs)

    for plain in (spaces.Box(0, 1, (3,)), spaces.MultiDiscrete([2, 2]), spaces.MultiBinary(4)):
        assert adapt_space(plain) == (plain, None)

    env = POPGymAdapter(_TupleEnv())
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    _, reward, *_ = env.step(0)
    assert type(reward) is float


# ---------------------------------------------------------------------------------------------
# The adapted tasks in gymnasium's registry

TWINS = {
    "smt_rl/MiniGrid-MemoryS7-v0": ("MiniGrid-MemoryS7-v0", MiniGridSymbolic),
    "smt_rl/popgym-RepeatFirstEasy-v0": ("popgym-RepeatFirstEasy-v0", POPGymAdapter),
}


def _wrapper_chain(env: gym.Env) -> list[type]:
    chain = [type(env)]
    while isinstance(env, gym.Wrapper):
        env = env.env
        chain.append(type(env))
    return chain


@pytest.mark.parametrize("twin", TWINS)
def test_gym_make_builds_the_adapted_task(twin: str) -> None:
    plain, adapter = TWINS[twin]
    env, reference = gym.make(twin), make_env(plain)
    assert isinstance(env, adapter) and env.spec.id == twin
    assert env.observation_space == reference.observation_space
    assert env.action_space == reference.action_space
    _check(env)
    if adapter is POPGymAdapter:  # no passive checker below the adapter: it would warn
        assert gym.wrappers.PassiveEnvChecker not in _wrapper_chain(env)
    remade = env.spec.make()  # gym.make's spec re-makes the same task
    assert remade.observation_space == env.observation_space


def test_gym_make_takes_the_adapters_kwargs_too() -> None:
    env = gym.make("smt_rl/MiniGrid-MemoryS7-v0", movement_only=True, max_steps=40)
    assert env.action_space == spaces.Discrete(3) and env.unwrapped.max_steps == 40


@pytest.mark.parametrize("twin", TWINS)
def test_make_env_is_gym_make_of_the_twin_step_for_step(twin: str) -> None:
    plain, _ = TWINS[twin]
    for seed in (0, 1):
        ours = _run_random_episode(make_env(plain), seed)
        theirs = _run_random_episode(gym.make(twin), seed)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            obs_a, *rest_a = a
            obs_b, *rest_b = b
            if isinstance(obs_a, dict):
                assert obs_a.keys() == obs_b.keys()
                for key in obs_a:
                    np.testing.assert_array_equal(obs_a[key], obs_b[key])
            else:
                np.testing.assert_array_equal(obs_a, obs_b)
            assert repr(rest_a) == repr(rest_b)  # reward, flags and info, types included


def test_import_registers_the_memory_twins_without_importing_their_packages() -> None:
    code = (
        "import sys, gymnasium as gym, envs; "
        "print(all(f'smt_rl/{i}' in gym.registry for i in envs.MEMORY_TASK_IDS[1:]), "
        "'minigrid' in sys.modules, 'popgym' in sys.modules); "
        "print(type(gym.make('smt_rl/MiniGrid-MemoryS9-v0')).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False", "False", "MiniGridSymbolic"]


def test_other_twins_are_registered_on_demand() -> None:
    door_key = make_env("smt_rl/MiniGrid-DoorKey-5x5-v0")
    assert isinstance(door_key, MiniGridSymbolic)
    assert isinstance(gym.make("smt_rl/MiniGrid-DoorKey-5x5-v0"), MiniGridSymbolic)
    hard = make_env("popgym-RepeatFirstHard-v0")  # a plain popgym id means its twin
    assert isinstance(hard, POPGymAdapter) and "smt_rl/popgym-RepeatFirstHard-v0" in gym.registry
    babyai = make_env("BabyAI-GoToLocal-v0")  # a plain BabyAI id stays plain (it needs its mission)
    assert "mission" in babyai.observation_space.spaces
    assert isinstance(make_env("smt_rl/BabyAI-GoToLocal-v0"), MiniGridSymbolic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # registering again is a no-op
        assert envs.register_adapted("MiniGrid-DoorKey-5x5-v0") == "smt_rl/MiniGrid-DoorKey-5x5-v0"


# ---------------------------------------------------------------------------------------------
# make_env errors on registered ids


def test_unknown_id_suggests_close_matches() -> None:
    with pytest.raises(UnknownTaskError) as excinfo:
        make_env("smt_rl/PasiveTMaze-v0")
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "env.id" in message and "'smt_rl/PasiveTMaze-v0'" in message
    assert "Did you mean 'smt_rl/PassiveTMaze-v0'" in message
    assert all(task in message for task in MEMORY_TASK_IDS)
    assert "env.entry_point" in message

    with pytest.raises(UnknownTaskError, match="Did you mean 'popgym-RepeatFirstEasy-v0'"):
        make_env("popgym-RepeatFirstEasey-v0")
    with pytest.raises(UnknownTaskError, match="Did you mean 'MiniGrid-MemoryS7-v0'"):
        make_env("minigrid-memorys7-v0")


def test_bad_kwarg_names_field_key_and_accepted_keys() -> None:
    with pytest.raises(TaskConfigError) as excinfo:
        make_env(TMAZE_ID, kwargs={"lenght": 10})
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "env.kwargs" in message and "'lenght'" in message
    assert "Accepted keys: length" in message and "Did you mean 'length'" in message

    with pytest.raises(TaskConfigError, match=r"env\.kwargs.*'num_decks'.*Accepted keys: \(none\)"):
        make_env("popgym-RepeatFirstEasy-v0", kwargs={"num_decks": 2})
    # MemoryEnv takes **kwargs, so the error comes from its constructor and is translated.
    with pytest.raises(TaskConfigError, match=r"env\.kwargs.*'colour'.*size.*movement_only"):
        make_env("MiniGrid-MemoryS7-v0", kwargs={"colour": 1})
    with pytest.raises(TaskConfigError, match=r"env\.kwargs.*'width' is set by"):
        make_env("MiniGrid-MemoryS7-v0", kwargs={"width": 9})
    with pytest.raises(TaskConfigError, match=r"'max_episode_steps'.*env\.max_episode_steps"):
        make_env(TMAZE_ID, kwargs={"max_episode_steps": 5})


def test_bad_kwarg_value_names_field() -> None:
    with pytest.raises(TaskConfigError, match=r"env\.kwargs.*`length` must be an integer >= 0"):
        make_env(TMAZE_ID, kwargs={"length": -5})
    with pytest.raises(TaskConfigError, match=r"env\.kwargs.*`movement_only` must be True or"):
        make_env("MiniGrid-MemoryS7-v0", kwargs={"movement_only": "yes"})


def test_bad_config_shapes() -> None:
    with pytest.raises(TaskConfigError, match=r"No task given.*env\.id.*env\.entry_point"):
        make_env()
    with pytest.raises(TaskConfigError, match=r"env\.kwargs must be a mapping"):
        make_env(TMAZE_ID, kwargs=[("length", 3)])  # type: ignore[arg-type]
    with pytest.raises(TaskConfigError, match=r"env\.max_episode_steps must be a positive"):
        make_env(TMAZE_ID, max_episode_steps=0)
    with pytest.raises(TaskConfigError, match=r"env\.id must be a non-empty string"):
        make_env(3)  # type: ignore[arg-type]


def test_max_episode_steps_adds_a_time_limit() -> None:
    env = make_env(TMAZE_ID, kwargs={"length": 10}, max_episode_steps=4)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(4)]
    assert flags == [(False, False)] * 3 + [(False, True)]


def test_any_gymnasium_id_works() -> None:
    env = make_env("CartPole-v1")
    assert env.spec.id == "CartPole-v1" and env.spec.max_episode_steps == 500
    env = make_env("gymnasium.envs:CartPole-v1")  # gymnasium's "module:Id" form
    assert env.spec.id == "CartPole-v1"


# ---------------------------------------------------------------------------------------------
# make_env with an entry point

USER_MODULE = "smt_rl_test_user_envs"
USER_CODE = '''
import gymnasium as gym
import numpy as np


class CountdownEnv(gym.Env):
    """Counts down from `start`; each step pays `reward`; ends at zero."""

    def __init__(self, start: int = 3, reward: float = 1.0):
        self.start, self.reward = start, reward
        self.observation_space = gym.spaces.Box(0.0, float(start), (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = self.start
        return np.array([self.left], np.float32), {}

    def step(self, action):
        self.left -= 1
        return np.array([self.left], np.float32), self.reward, self.left == 0, False, {}


def make_countdown(start=3):
    return CountdownEnv(start=start)


def make_not_an_env():
    return object()


class NotAnEnv:
    pass


NOT_CALLABLE = 3
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory: pytest.TempPathFactory):
    """A user's own module of envs, importable under USER_MODULE for this test module."""
    folder = tmp_path_factory.mktemp("user_envs")
    (folder / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_CODE))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield USER_MODULE
        sys.modules.pop(USER_MODULE, None)


def _countdown_length(env: gym.Env) -> tuple[int, float]:
    env.reset(seed=0)
    steps, total = 0, 0.0
    while True:
        _, reward, terminated, truncated, _ = env.step(0)
        steps, total = steps + 1, total + reward
        if terminated or truncated:
            return steps, total


def test_entry_point_class_with_kwargs(user_module: str) -> None:
    env = make_env(entry_point=f"{user_module}:CountdownEnv", kwargs={"start": 5, "reward": 2.0})
    assert type(env.unwrapped).__name__ == "CountdownEnv"
    assert env.spec.id == f"{user_module}.CountdownEnv"
    assert env.spec.kwargs == {"start": 5, "reward": 2.0}
    assert _countdown_length(env) == (5, 10.0)
    _check(env)


def test_entry_point_factory_named_by_id_with_time_limit(user_module: str) -> None:
    env = make_env(
        "Countdown-v0",
        kwargs={"start": 9},
        entry_point=f"{user_module}:make_countdown",
        max_episode_steps=4,
    )
    assert env.spec.id == "Countdown-v0"
    assert _countdown_length(env) == (4, 4.0)  # truncated by the time limit


def test_entry_point_bad_kwarg(user_module: str) -> None:
    with pytest.raises(TaskConfigError) as excinfo:
        make_env(entry_point=f"{user_module}:CountdownEnv", kwargs={"strat": 5})
    message = str(excinfo.value)
    assert "env.kwargs" in message and "'strat'" in message
    assert "Accepted keys: start, reward" in message


@pytest.mark.parametrize("bad", ["no_colon", "a:b:c", "1mod:X", ":X", "mod:", "mod:a.b", 42])
def test_entry_point_bad_format(bad: object) -> None:
    with pytest.raises(TaskConfigError, match=r"env\.entry_point must be of the form 'package"):
        make_env(entry_point=bad)  # type: ignore[arg-type]


def test_entry_point_missing_module() -> None:
    with pytest.raises(TaskConfigError, match=r"env\.entry_point.*no module named 'no_such_pkg'"):
        make_env(entry_point="no_such_pkg.envs:MyEnv")


def test_entry_point_missing_attribute(user_module: str) -> None:
    with pytest.raises(TaskConfigError) as excinfo:
        make_env(entry_point=f"{user_module}:CountDownEnv")
    message = str(excinfo.value)
    assert "env.entry_point" in message and "has no attribute 'CountDownEnv'" in message
    assert "Did you mean 'CountdownEnv'" in message and "package.module:Name" in message


@pytest.mark.parametrize("attr", ["NotAnEnv", "make_not_an_env", "NOT_CALLABLE"])
def test_entry_point_not_an_env(user_module: str, attr: str) -> None:
    with pytest.raises(TaskConfigError, match=r"env\.entry_point.*gymnasium\.Env"):
        make_env(entry_point=f"{user_module}:{attr}")


def test_entry_point_module_that_fails_on_import(tmp_path, monkeypatch) -> None:
    """The module and its own error, in one line."""
    (tmp_path / "smt_rl_test_broken_envs.py").write_text("raise RuntimeError('no GPU\\nfound')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskConfigError) as excinfo:
        make_env(entry_point="smt_rl_test_broken_envs:MyEnv")
    message = str(excinfo.value)
    assert "env.entry_point" in message and "'smt_rl_test_broken_envs'" in message
    assert "RuntimeError: no GPU found" in message and "\n" not in message


def test_entry_point_with_bad_id(user_module: str) -> None:
    with pytest.raises(TaskConfigError, match=r"env\.id 'bad id!' cannot name a task"):
        make_env("bad id!", entry_point=f"{user_module}:CountdownEnv")
