"""Kill points: named places between two writes where a test can make the process die.

Every promise about killed runs (resume continues exactly, no log line is lost or written twice,
a dataset or checkpoint is never half-written) is about what happens between writes. The code
calls :func:`kill_point` at those places; it does nothing unless the environment variable
``SMT_RL_KILL_AT`` names the point (``"point"``, or ``"point:N"`` for the N-th time it is
reached, counting from 1), in which case the process kills itself with SIGKILL right there:
no cleanup, no ``finally``, as a kill -9 or a power cut would leave it.

Points: ``write.before_rename`` (a temporary file fully written, not yet renamed into place),
``log.line`` (a metrics line written), ``resume.saved`` (a resume state written), ``data.chunk``
(a dataset chunk in place, not yet listed in ``meta.json``), ``checkpoint.weights`` (the weights
written, not yet their description), ``rl.rollout`` (a rollout collected, nothing learned yet).
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "SMT_RL_KILL_AT"
_reached: dict[str, int] = {}  # point -> times reached in this process


def kill_point(name: str) -> None:
    """SIGKILL this process if ``SMT_RL_KILL_AT`` names ``name`` (and this is its N-th time)."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
