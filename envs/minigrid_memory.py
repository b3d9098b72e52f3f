"""Adapter that turns a MiniGrid env into the symbolic form this project's encoder reads.

MiniGrid observations are ``{"image", "direction", "mission"}``; the mission is a free-text string
(constant on the Memory tasks) that the step encoder cannot embed, so it is dropped. The wrapper
also reports ``info["success"]`` on the last step of every episode, which MiniGrid does not.

The wrapper works on any env with MiniGrid's observation layout; :func:`make_minigrid_symbolic`,
the entry point of the ``smt_rl/MiniGrid-*`` ids, imports minigrid only when it is called.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

MOVEMENT_ACTIONS = 3  # MiniGrid actions 0 = turn left, 1 = turn right, 2 = move forward
# largest value of each symbolic image channel in MiniGrid: object index (10 = agent),
# colour index (5 = grey), state (2 = locked)
SYMBOLIC_CHANNEL_MAX = (10, 5, 2)


class MiniGridSymbolic(gym.ObservationWrapper, RecordConstructorArgs):
    """MiniGrid env whose observation is ``Dict(image=Box, direction=Discrete(4))``.

    ``image`` is ``Box(0, high, (V, V, 3), uint8)`` with ``V`` the env's view size (7 by default)
    and ``high`` the largest value of each symbolic channel (object 10, colour 5, state 2), so the
    encoder scales the channels to their true range rather than to 0..255; ``direction`` comes back
    as ``np.int64``.
    On the step that ends an episode, ``info["success"]`` is True iff the episode terminated with a
    positive reward (reached the goal / matching object); it is False on truncation (time-out) and
    on termination without reward (e.g. the wrong object in the Memory tasks).

    Args:
        env: a MiniGrid env (its observation space must be a Dict with "image" and "direction").
        movement_only: if True, the action space becomes ``Discrete(3)`` (left, right, forward),
            all that navigation and memory tasks need; by default the full action space is kept.
        categorical: if True, ``image`` is a flat ``MultiDiscrete`` of ``H * W * 3`` codes
            (row-major over the (H, W, 3) image), ``nvec`` (11, 6, 3) per cell:
            the symbolic codes are categories (a key is not "almost a ball"), so the encoder gives
            every (cell, value) its own embedding and the next-observation target becomes a
            cross-entropy in which one changed object weighs as much as any other change.
    """

    def __init__(
        self, env: gym.Env, movement_only: bool = False, categorical: bool = False
    ) -> None:
        for name, value in (("movement_only", movement_only), ("categorical", categorical)):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(
                    f"MiniGridSymbolic: `{name}` must be True or False, got {value!r}."
                )
        movement_only, categorical = bool(movement_only), bool(categorical)
        RecordConstructorArgs.__init__(self, movement_only=movement_only, categorical=categorical)
        gym.ObservationWrapper.__init__(self, env)
        self.movement_only = movement_only

        space = env.observation_space
        if not (
            isinstance(space, spaces.Dict)
            and isinstance(space.spaces.get("image"), spaces.Box)
            and isinstance(space.spaces.get("direction"), spaces.Discrete)
        ):
            raise ValueError(
                f"MiniGridSymbolic wraps MiniGrid envs, whose observation space is a Dict with "
                f"'image' (Box) and 'direction' (Discrete); got {space}. Use it only on "
                f"'MiniGrid-*' ids."
            )
        image = space["image"]
        if image.shape[-1] == len(SYMBOLIC_CHANNEL_MAX):
            high = np.broadcast_to(np.array(SYMBOLIC_CHANNEL_MAX, image.dtype), image.shape)
            if categorical:
                image = spaces.MultiDiscrete(high.astype(np.int64).reshape(-1) + 1)
            else:
                image = spaces.Box(0, high.copy(), image.shape, image.dtype)
        elif categorical:
            raise ValueError(
                f"MiniGridSymbolic(categorical=True) needs the symbolic image (H, W, 3); got an "
                f"image of shape {image.shape}."
            )
        self.categorical = categorical
        self.observation_space = spaces.Dict({"image": image, "direction": space["direction"]})
        if movement_only:
            if not (
                isinstance(env.action_space, spaces.Discrete)
                and env.action_space.n >= MOVEMENT_ACTIONS
            ):
                raise ValueError(
                    f"MiniGridSymbolic: movement_only=True needs a Discrete action space with at "
                    f"least {MOVEMENT_ACTIONS} actions, got {env.action_space}."
                )
            self.action_space = spaces.Discrete(MOVEMENT_ACTIONS)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Keep image and direction; drop the mission string."""
        image = observation["image"]
        if self.categorical:
            image = image.astype(np.int64).reshape(-1)
        return {"image": image, "direction": np.int64(observation["direction"])}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Step the env; on the last step of an episode add ``info["success"]``."""
        if self.movement_only and not 0 <= action < MOVEMENT_ACTIONS:
            raise ValueError(
                f"MiniGridSymbolic(movement_only=True): action must be 0 (left), 1 (right) or "
                f"2 (forward), got {action!r}."
            )
        obs, reward, terminated, truncated, info = super().step(action)
        if terminated or truncated:
            info = dict(info)
            info["success"] = bool(terminated and reward > 0)
        return obs, reward, terminated, truncated, info


def make_minigrid_symbolic(
    env_id: str,
    max_episode_steps: int | None = None,
    movement_only: bool = False,
    categorical: bool = False,
    **kwargs: Any,
) -> MiniGridSymbolic:
    """``gym.make(env_id, **kwargs)`` of a MiniGrid or BabyAI id, wrapped by MiniGridSymbolic.

    The entry point of the ``smt_rl/MiniGrid-*`` and ``smt_rl/BabyAI-*`` ids. ``max_episode_steps``
    puts gymnasium's ``TimeLimit`` below the wrapper, so that a time-out ends with
    ``info["success"] = False`` (a time limit given to ``gym.make`` itself sits above the wrapper).
    """
    import minigrid  # noqa: F401  (registers MiniGrid's ids; a slow import, so only here)

    env = gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    try:
        return MiniGridSymbolic(env, movement_only=movement_only, categorical=categorical)
    except ValueError:
        env.close()
        raise
