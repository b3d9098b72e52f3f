"""Memory-demanding tasks as gymnasium envs, and adapters for MiniGrid and POPGym.

Importing this package registers this project's envs under the ``smt_rl/`` namespace: the
T-maze (``smt_rl/PassiveTMaze-v0``) and the adapted MiniGrid / POPGym memory tasks
(``smt_rl/MiniGrid-MemoryS7-v0``, ``smt_rl/popgym-RepeatFirstEasy-v0``, ...), so that
``gym.make`` builds them; registering again is a no-op. Use :func:`make_env` to build any task
from config values. Depends only on gymnasium and numpy (MiniGrid and POPGym are imported lazily,
when one of their envs is made; POPGym is the optional extra ``smt-rl[popgym]``).
"""

from __future__ import annotations

import gymnasium as gym

from .minigrid_memory import MiniGridSymbolic
from .popgym_tasks import POPGymAdapter, adapt_space
from .registry import (
    MEMORY_TASK_IDS,
    MissingPackageError,
    TaskConfigError,
    UnknownTaskError,
    make_env,
    register_adapted,
)
from .tmaze import TMAZE_ID, PassiveTMaze


def register_envs() -> None:
    """Register this package's envs and the memory tasks' adapted twins; skips registered ids."""
    if TMAZE_ID not in gym.registry:
        gym.register(id=TMAZE_ID, entry_point=f"{PassiveTMaze.__module__}:PassiveTMaze")
    for env_id in MEMORY_TASK_IDS:
        if env_id != TMAZE_ID:
            register_adapted(env_id)


register_envs()

__all__ = [
    "MEMORY_TASK_IDS",
    "TMAZE_ID",
    "MiniGridSymbolic",
    "MissingPackageError",
    "POPGymAdapter",
    "PassiveTMaze",
    "TaskConfigError",
    "UnknownTaskError",
    "adapt_space",
    "make_env",
    "register_adapted",
    "register_envs",
]
