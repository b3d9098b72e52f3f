"""Task-specific probes of a pretrained memory, handed to the SMT trainer as hooks.

A probe reads what a task asks to remember out of the student's own memory on held-out episodes
(the core, :mod:`smt_rl.smt.trainer`, names no task: the pipeline picks the probe by env id).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from envs import TMAZE_ID
from smt_rl.smt.evaluate import linear_probe_accuracy
from smt_rl.smt.model import SMTModel
from smt_rl.smt.trainer import Probe


class TMazeProbe:
    """PassiveTMaze: does the student's memory at the junction (the episode's last step) still
    hold the cue shown at step 0?

    - ``probe/cue_accuracy``: a linear classifier's held-out accuracy at reading the cue (an
      untrained memory can score well here: it is a weak signal);
    - ``probe/junction_reward_sign``: how often the decoder's predicted junction reward has the
      right sign (+ for the cue's action, - for the other), over both actions: what the agent
      acts on, so it is the probe's score.
    """

    score_key = "probe/junction_reward_sign"

    @torch.no_grad()
    def __call__(self, model: SMTModel, episodes: TensorDictBase) -> dict[str, float]:
        mask = episodes["mask"]
        student = model.student_memory(episodes)
        rows = torch.arange(mask.shape[0])
        junction = student[rows, mask.sum(1) - 1]  # (B, K, d)
        cue = episodes["observation"][:, 0, :2].argmax(-1)
        correct = []
        for action in (0, 1):
            future = torch.full(
                (mask.shape[0], model.cfg.horizon), action, dtype=episodes["action"].dtype
            )
            reward = model.decoder.predict_reward(junction, future)[:, 0]
            expected = torch.where(cue == action, 1.0, -1.0)
            correct.append(torch.sign(reward) == expected)
        features = junction.flatten(1).float().cpu()
        return {
            "probe/cue_accuracy": linear_probe_accuracy(features, cue.cpu()),
            "probe/junction_reward_sign": float(torch.cat(correct).float().mean()),
        }


PROBES: dict[str, Probe] = {TMAZE_ID: TMazeProbe()}  # env id -> its probe


def probe_for(env_id: str | None) -> Probe | None:
    """The probe of a task, or None when it has none."""
    return PROBES.get(env_id) if env_id is not None else None
