"""Step encoder, memory cells and teacher/decoder on every supported space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from smt_rl.errors import SpaceError
from smt_rl.models import CELLS, PredictiveDecoder, StepEncoder, TeacherEncoder
from smt_rl.models.common import rms_normalize, symlog
from smt_rl.models.teacher import reward_class
from smt_rl.smt.targets import predictive_targets

B, T, D = 3, 6, 32

SPACES = {
    "box": spaces.Box(-2, 2, (5,), np.float32),
    "unbounded_box": spaces.Box(-np.inf, np.inf, (2, 3), np.float32),
    "image": spaces.Box(0, 255, (7, 7, 3), np.uint8),
    "discrete": spaces.Discrete(4, start=1),
    "multidiscrete": spaces.MultiDiscrete([3, 2, 5]),
    "multibinary": spaces.MultiBinary(4),
    "dict": spaces.Dict({"pos": spaces.Box(0, 1, (2,)), "flag": spaces.Discrete(2)}),
}


def _sample(space, shape):
    """A TensorDict / tensor of samples of ``space`` with leading dims ``shape``."""
    if isinstance(space, spaces.Dict):
        return TensorDict({k: _sample(s, shape) for k, s in space.spaces.items()}, batch_size=shape)
    n = int(np.prod(shape))
    data = np.stack([space.sample() for _ in range(n)]).reshape(*shape, *space.shape)
    tensor = torch.as_tensor(data)
    return tensor.long() if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)) else tensor


def _batch(obs_space, act_space):
    batch = TensorDict(
        {
            "observation": _sample(obs_space, (B, T)),
            "action": _sample(act_space, (B, T)),
            "prev_action": _sample(act_space, (B, T)),
            "prev_reward": torch.randn(B, T),
            "is_init": torch.zeros(B, T, dtype=torch.bool),
            "step_count": torch.arange(T).expand(B, T),
            "mask": torch.ones(B, T, dtype=torch.bool),
            ("next", "observation"): _sample(obs_space, (B, T)),
            ("next", "reward"): torch.randn(B, T),
            ("next", "terminated"): torch.zeros(B, T, dtype=torch.bool),
        },
        batch_size=[B, T],
    )
    batch["is_init"][:, 0] = True
    batch["next", "terminated"][:, -1] = True
    return batch


@pytest.mark.parametrize("obs_name", list(SPACES))
@pytest.mark.parametrize("act_name", ["discrete", "box", "multidiscrete", "multibinary"])
def test_every_space_is_encoded_and_predicted(obs_name, act_name):
    obs_space, act_space = SPACES[obs_name], SPACES[act_name]
    torch.manual_seed(0)
    encoder = StepEncoder(obs_space, act_space, D)
    teacher = TeacherEncoder(D, 32, 1, 4, 64, 2, 8)
    decoder = PredictiveDecoder(obs_space, act_space, 16, 32, horizon=2)
    batch = _batch(obs_space, act_space)
    x = encoder(batch)
    assert x.shape == (B, T, D) and torch.isfinite(x).all()
    memory = teacher(x)
    assert memory.shape == (B, T, 2, 8)
    torch.testing.assert_close(memory.pow(2).mean(-1), torch.ones(B, T, 2), atol=1e-3, rtol=0)
    losses = decoder.losses(memory, predictive_targets(batch, 2))
    total = sum(losses.values())
    assert set(losses) == {"obs", "reward", "terminated", "far"} and torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in encoder.observation.parameters())


@pytest.mark.parametrize(
    "space",
    [spaces.Text(4), spaces.Tuple([spaces.Discrete(2)]), spaces.Graph(spaces.Discrete(2), None)],
)
def test_unsupported_space_is_refused_with_the_field_named(space):
    with pytest.raises(SpaceError, match="observation_space"):
        StepEncoder(space, spaces.Discrete(2), D)
    with pytest.raises(SpaceError, match="action_space"):
        StepEncoder(spaces.Discrete(2), space, D)


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_interface_scan_matches_steps_and_resets(name):
    torch.manual_seed(0)
    cell = CELLS[name](num_tokens=3, token_dim=8, input_dim=D, hidden=32)
    init = cell.initial_state(B)
    assert init.shape == (B, 3, 8)
    x = torch.randn(B, T, D)
    is_init = torch.zeros(B, T, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, 3] = True  # a reset mid-sequence
    scanned = cell.scan(x, is_init)
    assert scanned.shape == (B, T, 3, 8) and not scanned.requires_grad
    torch.testing.assert_close(scanned.pow(2).mean(-1), torch.ones(B, T, 3), atol=1e-3, rtol=0)
    memory = torch.randn(B, 3, 8)  # garbage before the first step: replaced by the reset
    manual = []
    for t in range(T):
        memory = cell.step(cell.reset_where(memory, is_init[:, t]), x[:, t])
        manual.append(memory)
    torch.testing.assert_close(scanned, torch.stack(manual, 1).detach())
    # after the mid-sequence reset, row 1 evolves like a fresh episode fed the same inputs
    fresh = cell.scan(
        x[1:2, 3:], torch.ones(1, T - 3, dtype=torch.bool) & (torch.arange(T - 3) == 0)
    )
    torch.testing.assert_close(scanned[1:2, 3:], fresh)
    # the step is differentiable, down to the learned initial state
    out = cell.step(cell.initial_state(B), x[:, 0])
    out.sum().backward()
    assert cell.initial.grad is not None and cell.initial.grad.abs().sum() > 0


def test_teacher_context_limits_attention():
    torch.manual_seed(0)
    teacher = TeacherEncoder(D, 32, 2, 4, context=4, num_tokens=2, token_dim=8)
    x = torch.randn(1, 12, D)
    base = teacher(x)
    changed = x.clone()
    changed[0, 0] += 5.0  # step 0 lies outside the context of steps >= 4 (2 layers: >= 7)
    after = teacher(changed)
    assert not torch.allclose(base[0, 1], after[0, 1])
    torch.testing.assert_close(base[0, 7:], after[0, 7:])
    full = TeacherEncoder(D, 32, 2, 4, context=1024, num_tokens=2, token_dim=8)
    full.load_state_dict(teacher.state_dict())
    assert not torch.allclose(full(x)[0, 11], full(changed)[0, 11])


def test_teacher_handles_context_1024_on_longer_sequences():
    torch.manual_seed(0)
    teacher = TeacherEncoder(8, 16, 1, 2, context=1024, num_tokens=1, token_dim=4)
    x = torch.randn(1, 1100, 8)
    changed = x.clone()
    changed[0, 0] += 5.0
    base, after = teacher(x), teacher(changed)
    assert base.shape == (1, 1100, 1, 4)
    assert not torch.allclose(base[0, 1023], after[0, 1023])  # step 0 is within 1024 steps
    torch.testing.assert_close(base[0, 1024:], after[0, 1024:])  # ... and beyond them, not


def test_decoder_offset_k_ignores_later_actions():
    torch.manual_seed(0)
    decoder = PredictiveDecoder(spaces.Discrete(3), spaces.Discrete(4), 16, 32, horizon=3)
    memory = torch.randn(2, 2, 8)
    actions = torch.tensor([[0, 1, 2], [3, 2, 1]])
    changed = actions.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 4
    a, b = decoder.features(memory, actions), decoder.features(memory, changed)
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_reward_scale_makes_the_reward_loss_unit_free():
    """A task paying 0.02 per step must weigh like one paying 1 (dataset's max |r| as the unit)."""
    torch.manual_seed(0)
    obs_space, act_space = SPACES["discrete"], SPACES["discrete"]
    decoder = PredictiveDecoder(obs_space, act_space, 16, 32, horizon=1)
    batch = _batch(obs_space, act_space)
    batch["next", "reward"] = torch.sign(torch.randn(B, T))
    memory = torch.randn(B, T, 2, 8)
    unit = decoder.losses(memory, predictive_targets(batch, 1, far=False))["reward"]
    batch["next", "reward"] = batch["next", "reward"] * 0.02
    tiny = decoder.losses(memory, predictive_targets(batch, 1, far=False))["reward"]
    decoder.reward_scale.fill_(0.02)
    scaled = decoder.losses(memory, predictive_targets(batch, 1, far=False))["reward"]
    torch.testing.assert_close(scaled, unit)
    assert not torch.allclose(tiny, unit)
    future = torch.zeros(B, T, 1, dtype=torch.long)
    predicted = decoder.predict_reward(memory, future)
    decoder.reward_scale.fill_(1.0)
    torch.testing.assert_close(predicted, decoder.predict_reward(memory, future) * 0.02)


def test_an_episode_ending_without_reward_is_its_own_reward_class():
    """MiniGrid-Memory's wrong object: the episode ends with reward 0. Among many ordinary
    zero-reward steps that one step must still weigh a third of the reward loss (classes: reward
    sign x episode ended), here also in the far target, which picks the last step."""
    torch.manual_seed(0)
    obs_space, act_space = SPACES["discrete"], SPACES["discrete"]
    decoder = PredictiveDecoder(obs_space, act_space, 16, 32, horizon=1)
    batch = _batch(obs_space, act_space)  # each of the B=3 rows ends its episode at its last step
    batch["next", "reward"] = torch.zeros(B, T)
    batch["next", "reward"][1:, -1] = 1.0  # rows 1, 2 end with +1; row 0 ends with 0
    # a decoder that predicts +1 everywhere ("touching any object pays")
    one = float(symlog(torch.tensor(1.0)))
    torch.nn.init.zeros_(decoder.reward.weight)
    torch.nn.init.constant_(decoder.reward.bias, one)
    targets = predictive_targets(batch, 1, far=True, far_last_prob=1.0)
    assert (
        targets["far_terminated"].all()
        and (targets["far_reward"] == batch["next", "reward"][:, -1:]).all()
    )
    memory = torch.randn(B, T, 2, 8)
    losses = decoder.losses(memory, targets)
    # classes present: (0, running) 15 steps, (0, ended) 1 step, (+, ended) 2 steps: errors
    # one^2, one^2 and 0 -> mean of class means = 2/3 one^2 (it would be 1/2 one^2 if the
    # wrong-object step hid among the running zero-reward steps)
    torch.testing.assert_close(losses["reward"], torch.tensor(2 / 3 * one**2))
    assert reward_class(
        torch.tensor([-1.0, 0.0, 2.0, 0.0]), torch.tensor([0, 0, 1, 1])
    ).tolist() == [0, 1, 5, 4]


def test_far_context_reads_the_step_input_at_the_far_target_step_only():
    """With ``far_context_dim`` the far reward predictor sees x_{t+j} (the view at the target
    step), so the memory must hold what that reward depends on given the view; x at any other
    step must not matter, and forgetting to pass the step inputs is an error."""
    torch.manual_seed(0)
    obs_space, act_space = SPACES["discrete"], SPACES["discrete"]
    decoder = PredictiveDecoder(obs_space, act_space, 16, 32, horizon=1, far_context_dim=D)
    batch = _batch(obs_space, act_space)
    targets = predictive_targets(batch, 1, far=True, far_last_prob=1.0)  # every target: step T-1
    memory, x = torch.randn(B, T, 2, 8), torch.randn(B, T, D)
    far = decoder.losses(memory, targets, x)["far"]
    earlier = x.clone()
    earlier[:, :-1] += 5.0
    torch.testing.assert_close(decoder.losses(memory, targets, earlier)["far"], far)
    last = x.clone()
    last[:, -1] += 5.0
    assert not torch.allclose(decoder.losses(memory, targets, last)["far"], far)
    with pytest.raises(ValueError, match="far_context"):
        decoder.losses(memory, targets)


def test_rotary_positions_make_attention_scores_depend_on_offsets_only():
    from smt_rl.models.teacher import rotate_positions

    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    steps = 40
    rq = rotate_positions(q.expand(1, 1, steps, 16).clone())
    rk = rotate_positions(k.expand(1, 1, steps, 16).clone())
    scores = rq[0, 0] @ rk[0, 0].T  # (T, T): q at position i against k at position j
    for offset in (0, 3, 17):
        diagonal = torch.diagonal(scores, -offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4)
    assert not torch.allclose(scores[5, 5], scores[5, 2])  # different offsets differ
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1).expand(1, 1, steps), atol=1e-5)


def test_window_tokens_hold_the_last_steps_exactly_in_the_student_and_the_labels():
    from smt_rl.smt.config import ModelConfig
    from smt_rl.smt.model import SMTModel

    with pytest.raises(ValueError, match=r"model\.window_tokens"):
        ModelConfig(memory_tokens=2, window_tokens=2)
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=D, memory_tokens=5, window_tokens=3, cell_hidden=32)
    model = SMTModel(cfg, spaces.Discrete(4), spaces.Discrete(2))
    steps = 9
    x = torch.randn(B, steps, D)
    is_init = torch.zeros(B, steps, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, 4] = True  # a second episode in row 1
    labels = model.labels(x, is_init)
    student = model.cell.scan(x, is_init)
    assert labels.shape == student.shape == (B, steps, 5, 16)
    # the student's window equals the labels' window at every step, resets included
    torch.testing.assert_close(student[:, :, :3], labels[:, :, :3].detach())
    tokens = model.cell.token(x)
    initial = rms_normalize(model.cell.window_initial)
    torch.testing.assert_close(labels[0, 7, 2], tokens[0, 5])  # token i holds x_{t-i}
    torch.testing.assert_close(labels[1, 5, 1], tokens[1, 4])  # the new episode's first step
    torch.testing.assert_close(labels[1, 5, 2], initial[0])  # nothing from the old episode
    torch.testing.assert_close(labels[1, 4, 2], initial[1])
    # episode ids (several episodes packed in a row) give the same window as resets
    segments = torch.cumsum(is_init.long(), 1)
    torch.testing.assert_close(model.labels(x, is_init, segments)[:, :, :3], labels[:, :, :3])
    # DMT trains the learned tokens only: the window is the teacher's as much as the student's
    window_params = {id(model.cell.project.weight), id(model.cell.window_initial)}
    assert not window_params & {id(p) for p in model.cell.transition_parameters()}
    # the predictive loss reaches the projection through the labels
    labels.sum().backward()
    assert model.cell.project.weight.grad.abs().sum() > 0
