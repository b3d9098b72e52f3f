"""The on-disk layout of a trajectory dataset folder (shared by the writer and the reader).

::

    DIR/meta.json                 # the commit point: env, spaces, chunk list, collection log
    DIR/chunks/chunk-000000/      # a TensorDict memmap of the steps of whole episodes, batch (S,)
    DIR/chunks/chunk-000001/      # each append adds a chunk; a chunk not listed in meta.json
                                  # (a run killed mid-append) is ignored and later removed

Per-step keys follow torchrl's names, one row per environment step ``t`` of an episode:
``observation`` (o_t, a tensor or a nested TensorDict for Dict spaces), ``action`` (a_t),
``is_init`` (t == 0), ``step_count`` (t), and under ``next``: ``observation`` (o_{t+1}),
``reward`` (r_t), ``terminated``, ``truncated`` and ``done``. Episodes are stored whole and
contiguously, in order; ``meta.json`` lists each chunk's episode lengths.
"""

from __future__ import annotations

FORMAT_NAME = "smt_rl.trajectories"
FORMAT_VERSION = 1
META_FILE = "meta.json"
CHUNK_DIR = "chunks"

STEP_KEYS = (
    "observation",
    "action",
    "is_init",
    "step_count",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
)


def chunk_name(index: int) -> str:
    """Folder name of the ``index``-th chunk."""
    return f"chunk-{index:06d}"
