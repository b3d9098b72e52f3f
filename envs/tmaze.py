"""Passive T-maze: the smallest task whose only difficulty is remembering one bit for long.

The agent sees a cue (left or right) once, walks a corridor of ``length`` identical steps in which
its actions do nothing, and at the junction must turn towards the cued side. The corridor gives no
information, so a policy can only succeed by carrying the cue in memory across ``length + 1`` steps.

Timeline of one episode (``L = length``)::

    reset()        -> o_0 = cue (one-hot index 0 = left, 1 = right), info = {"cue": 0 or 1}
    step 1 .. L    -> corridor observation (index 2), reward 0.0, actions ignored
    step L + 1     -> junction observation (index 3), reward 0.0, action ignored
    step L + 2     -> the action chosen while seeing the junction is judged:
                      reward +1.0 if it equals the cue else -1.0, terminated=True,
                      info = {"success": bool}; the returned observation is the junction again.

Every episode has exactly ``L + 2`` calls to ``step``; ``truncated`` is always False. Stepping a
finished episode (or before the first ``reset``) raises ``gymnasium.error.ResetNeeded``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

TMAZE_ID = "smt_rl/PassiveTMaze-v0"

CUE_LEFT = 0
CUE_RIGHT = 1
CORRIDOR = 2
JUNCTION = 3

_RESET_OPTIONS = ("cue",)


def _one_hot(index: int) -> np.ndarray:
    """The 4-long float32 one-hot vector with a 1 at ``index``."""
    vec = np.zeros(4, dtype=np.float32)
    vec[index] = 1.0
    return vec


class PassiveTMaze(gym.Env[np.ndarray, np.int64]):
    """Passive T-maze with a corridor of ``length`` steps (see the module docstring).

    Args:
        length: number of corridor observations between the cue and the junction; an integer
            >= 0. Costs nothing to raise: no per-step state is allocated.

    Observation: ``Box(0, 1, (4,), float32)``, one-hot: 0 cue left, 1 cue right, 2 corridor,
    3 junction. Action: ``Discrete(2)``, 0 = left, 1 = right.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, length: int = 100) -> None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(
                f"PassiveTMaze: `length` must be an integer >= 0 (the number of corridor steps "
                f"between the cue and the junction), got {length!r}. Use e.g. length=100."
            )
        self.length = int(length)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        # Pre-built observations: step() only copies one of them.
        self._obs = tuple(_one_hot(i) for i in range(4))
        self._cue: int | None = None
        self._t: int | None = None  # steps taken this episode; None = reset needed

    @property
    def cue(self) -> int | None:
        """The cue of the current episode (0 left, 1 right), or None before the first reset."""
        return self._cue

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options={"cue": 0 or 1}`` forces the cue, else it is drawn."""
        super().reset(seed=seed)
        self._cue = self._choose_cue(options)
        self._t = 0
        return self._obs[self._cue].copy(), {"cue": self._cue}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one step; only the action taken at the junction matters."""
        t = self._t
        if t is None:
            raise ResetNeeded(
                "PassiveTMaze.step() called with no episode running (it terminated, or reset() "
                "was never called); call reset() first."
            )
        if action != 0 and action != 1:
            raise ValueError(f"PassiveTMaze: action must be 0 (left) or 1 (right), got {action!r}.")
        t += 1
        if t <= self.length:
            self._t = t
            return self._obs[CORRIDOR].copy(), 0.0, False, False, {}
        if t == self.length + 1:
            self._t = t
            return self._obs[JUNCTION].copy(), 0.0, False, False, {}
        self._t = None
        success = int(action) == self._cue
        reward = 1.0 if success else -1.0
        return self._obs[JUNCTION].copy(), reward, True, False, {"success": success}

    def _choose_cue(self, options: dict[str, Any] | None) -> int:
        """The forced cue from ``options`` if given, else one drawn from ``self.np_random``."""
        if options:
            unknown = sorted(set(options) - set(_RESET_OPTIONS))
            if unknown:
                raise ValueError(
                    f"PassiveTMaze.reset: unknown option(s) {unknown}; accepted options: "
                    f"{list(_RESET_OPTIONS)} (e.g. options={{'cue': 0}})."
                )
            cue = options.get("cue")
            if cue is not None:
                if (
                    isinstance(cue, bool)
                    or not isinstance(cue, (int, np.integer))
                    or cue
                    not in (
                        CUE_LEFT,
                        CUE_RIGHT,
                    )
                ):
                    raise ValueError(
                        f"PassiveTMaze.reset: options['cue'] must be 0 (left) or 1 (right), "
                        f"got {cue!r}."
                    )
                return int(cue)
        return int(self.np_random.integers(2))
