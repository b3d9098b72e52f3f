"""Memory-demanding tasks as gymnasium envs, and adapters for MiniGrid and POPGym.

Importing this package registers this project's envs under the ``smt_rl/`` namespace
(``smt_rl/PassiveTMaze-v0``); registering again is a no-op. Use :func:`make_env` to build any task
from config values. Depends only on gymnasium and numpy (MiniGrid and POPGym are imported lazily,
when one of their ids is requested).
"""

from __future__ import annotations

import gymnasium as gym

from .minigrid_memory import MiniGridSymbolic
from .popgym_tasks import POPGymAdapter, adapt_space
from .registry import MEMORY_TASK_IDS, TaskConfigError, UnknownTaskError, make_env
from .tmaze import TMAZE_ID, PassiveTMaze


def register_envs() -> None:
    """Register this package's envs with gymnasium; does nothing for ids already registered."""
    if TMAZE_ID not in gym.registry:
        gym.register(id=TMAZE_ID, entry_point=f"{PassiveTMaze.__module__}:PassiveTMaze")


register_envs()

__all__ = [
    "MEMORY_TASK_IDS",
    "TMAZE_ID",
    "MiniGridSymbolic",
    "POPGymAdapter",
    "PassiveTMaze",
    "TaskConfigError",
    "UnknownTaskError",
    "adapt_space",
    "make_env",
    "register_envs",
]
