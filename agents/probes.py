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


class RecallProbe:
    """Does the memory still hold an observation the task asks to repeat (Discrete observations,
    e.g. POPGym's card suits)?

    ``probe/recall_student`` and ``probe/recall_teacher``: a linear classifier's held-out accuracy
    at reading ``o_{t - lag}`` (``lag=None``: the episode's first observation) from the student's
    own memory and from the teacher's label at every step ``t`` that has one; the student's is the
    score.

    Args:
        lag: steps back (in the dataset's indexing: the observation ``lag`` rows earlier).
        max_rows: at most this many (memory, observation) pairs fit the probe.
    """

    score_key = "probe/recall_student"

    def __init__(self, lag: int | None, max_rows: int = 6000) -> None:
        self.lag, self.max_rows = lag, max_rows

    @torch.no_grad()
    def __call__(self, model: SMTModel, episodes: TensorDictBase) -> dict[str, float]:
        x = model.step_encoder(episodes)
        is_init = episodes["is_init"]
        memories = {"student": model.cell.scan(x, is_init), "teacher": model.labels(x, is_init)}
        obs, mask = episodes["observation"], episodes["mask"]
        first = 1 if self.lag is None else self.lag
        steps = torch.arange(first, obs.shape[1], device=obs.device)
        target = obs[:, :1].expand(-1, len(steps)) if self.lag is None else obs[:, steps - first]
        valid = mask[:, steps].reshape(-1)
        labels = target.reshape(-1)[valid][: self.max_rows].long().cpu()
        out = {}
        for name, memory in memories.items():
            features = memory[:, steps].flatten(2).reshape(-1, memory[0, 0].numel())[valid]
            accuracy = linear_probe_accuracy(features[: self.max_rows].float().cpu(), labels)
            out[f"probe/recall_{name}"] = accuracy
        return out


PROBES: dict[str, Probe] = {  # env id -> its probe
    TMAZE_ID: TMazeProbe(),
    "popgym-RepeatFirstEasy-v0": RecallProbe(lag=None),
    "popgym-RepeatPreviousEasy-v0": RecallProbe(lag=3),  # k=4 counts the current card
}


def probe_for(env_id: str | None) -> Probe | None:
    """The probe of a task (by the id users type or its ``smt_rl/`` twin), or None."""
    if env_id is None:
        return None
    return PROBES.get(env_id) or PROBES.get(env_id.removeprefix("smt_rl/"))
