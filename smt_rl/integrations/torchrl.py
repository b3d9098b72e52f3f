"""A pretrained SMT memory as a torchrl module, plus the env transform that feeds it.

The memory's step input is ``x_t = (o_t, a_{t-1}, r_{t-1}, is_init, t)``. In a torchrl env:

- ``observation`` comes from the env; ``is_init`` from :class:`torchrl.envs.InitTracker`;
  ``step_count`` (t) from :class:`torchrl.envs.StepCounter`;
- ``prev_action`` and ``prev_reward`` from :class:`PreviousActionReward` (below);
- the memory state ``m_{t-1}`` rides in the tensordict under ``"recurrent_state"``, registered by
  :meth:`SMTMemoryModule.make_tensordict_primer` like a ``GRUModule``'s.

:meth:`SMTMemoryModule.make_env_transforms` returns all four in order::

    env = TransformedEnv(base_env, Compose(*memory.make_env_transforms()))
    policy = TensorDictSequential(memory, actor_head_reading_"memory")
    collector = Collector(env, policy, frames_per_batch=..., total_frames=...)

The memory is frozen: it runs under ``no_grad`` in both of torchrl's modes. In sequential mode
(collectors, the default) every row is one transition from its stored state, so any batch
shape works, shuffled or not. In recurrent mode (``with set_recurrent_mode(True)``) the last
batch dim is time: the memory is scanned over each trajectory from the state stored at its first
step, resetting where ``is_init``.
"""

from __future__ import annotations

import os

import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Unbounded
from torchrl.envs import InitTracker, StepCounter, TensorDictPrimer, Transform
from torchrl.modules import recurrent_mode

from smt_rl.data.torchrl_io import per_step
from smt_rl.errors import ConfigError
from smt_rl.integrations.memory import PretrainedMemory
from smt_rl.memory import step_inputs
from smt_rl.spaces import action_indices

NestedKey = str | tuple[str, ...]


class PreviousActionReward(Transform):
    """Writes the previous step's action and reward into each observation.

    After a step: ``prev_action`` = the action just taken, ``prev_reward`` = the reward just
    received (as the env's specs shape them, e.g. ``(*B, 1)`` rewards). At a reset: zeros for the
    environments being reset, unchanged values for the others.

    Args:
        action_key: the env's action entry.
        reward_key: the env's reward entry.
        prev_action_key: where to write ``a_{t-1}``.
        prev_reward_key: where to write ``r_{t-1}``.
    """

    def __init__(
        self,
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        prev_action_key: NestedKey = "prev_action",
        prev_reward_key: NestedKey = "prev_reward",
    ) -> None:
        super().__init__(in_keys=[], out_keys=[prev_action_key, prev_reward_key])
        self.action_key, self.reward_key = action_key, reward_key
        self.prev_action_key, self.prev_reward_key = prev_action_key, prev_reward_key

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        next_tensordict.set(self.prev_action_key, tensordict.get(self.action_key).clone())
        next_tensordict.set(self.prev_reward_key, next_tensordict.get(self.reward_key).clone())
        return next_tensordict

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        reset = None if tensordict is None else tensordict.get("_reset", None)
        specs = {
            self.prev_action_key: self.parent.full_action_spec[self.action_key],
            self.prev_reward_key: self.parent.full_reward_spec[self.reward_key],
        }
        for key, spec in specs.items():
            zero = spec.zero().to(tensordict_reset.device or spec.device)
            old = None if tensordict is None else tensordict.get(key, None)
            if reset is not None and old is not None:
                mask = reset.reshape(*reset.shape[: tensordict_reset.ndim])
                mask = mask.reshape(*mask.shape, *([1] * (zero.dim() - mask.dim())))
                zero = torch.where(mask, zero, old)
            tensordict_reset.set(key, zero)
        return tensordict_reset

    def transform_observation_spec(self, observation_spec):
        observation_spec[self.prev_action_key] = self.parent.full_action_spec[
            self.action_key
        ].clone()
        observation_spec[self.prev_reward_key] = self.parent.full_reward_spec[
            self.reward_key
        ].clone()
        return observation_spec


class SMTMemoryModule(TensorDictModuleBase):
    """A frozen, pretrained SMT memory that reads step inputs and writes memory features.

    Keys (``*B`` any batch shape; in recurrent mode the last batch dim is time):

    - in: the observation (``observation_key``), ``prev_action``, ``prev_reward`` (``(*B, 1)`` or
      ``(*B,)``), ``step_count`` and ``is_init`` (``(*B, 1)`` or ``(*B,)``), and the state
      ``state_key`` ``(*B, K, d)`` = ``m_{t-1}`` (optional: missing means every row starts).
    - out: ``out_key`` ``(*B, Z)`` = ``m_t`` flattened (Z = K * d), and ``("next", state_key)``
      ``(*B, K, d)`` = ``m_t``, the state the next step reads.

    Discrete actions may come as indices or one-hot (torchrl's ``GymEnv`` default), MultiDiscrete
    as indices or concatenated one-hots. Values are moved to the memory's device.

    Args:
        memory: a :class:`PretrainedMemory`, or a checkpoint folder to load one from (a
            pretraining checkpoint or an ``smt_ppo`` agent's).
        observation_key: where the observation is. For a ``Dict`` observation space either a
            nested tensordict with the members under this key, or ``None`` to read the members
            from the root (as torchrl's ``GymEnv`` lays out Dict observations).
        state_key: the memory state's key (``("next", state_key)`` is written).
        out_key: where to write the flattened memory ``(*B, Z)``.
        default_recurrent_mode: the mode outside any ``set_recurrent_mode`` context
            (torchrl's convention; default sequential).
        device: where to load ``memory`` when it is a path (``"auto"``: CUDA when present).
    """

    def __init__(
        self,
        memory: PretrainedMemory | str | os.PathLike,
        observation_key: NestedKey | None = "observation",
        state_key: str = "recurrent_state",
        out_key: NestedKey = "memory",
        default_recurrent_mode: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if not isinstance(memory, PretrainedMemory):
            memory = PretrainedMemory.from_checkpoint(memory, device)
        self.memory = memory
        if observation_key is None and not isinstance(memory.observation_space, spaces.Dict):
            raise ConfigError(
                "observation_key=None reads a Dict observation's members from the root, but this "
                f"memory was trained on {memory.observation_space}; pass the observation's key."
            )
        if not isinstance(state_key, str):
            raise ConfigError(f"state_key must be a string, got {state_key!r}.")
        self.observation_key = observation_key
        self.state_key = state_key
        self.out_key = out_key
        self._recurrent_mode = default_recurrent_mode
        observation_keys: list[NestedKey] = (
            list(memory.observation_space.spaces) if observation_key is None else [observation_key]
        )
        self.in_keys = [
            *observation_keys,
            "prev_action",
            "prev_reward",
            "step_count",
            "is_init",
            state_key,
        ]
        self.out_keys = [out_key, ("next", state_key)]

    @property
    def recurrent_mode(self) -> bool:
        """torchrl's mode: the ``set_recurrent_mode`` context when set, else the default."""
        mode = recurrent_mode()
        return bool(self._recurrent_mode) if mode is None else bool(mode)

    def make_tensordict_primer(self) -> TensorDictPrimer:
        """Registers ``state_key`` ``(K, d)`` in the env's specs (zeros at reset; the module
        replaces them with its learned initial state where ``is_init``)."""
        return TensorDictPrimer(
            {self.state_key: Unbounded(shape=self.memory.memory_shape)}, expand_specs=True
        )

    def make_env_transforms(self) -> list[Transform]:
        """Everything the memory reads that a plain env lacks, in order: ``InitTracker``,
        ``StepCounter``, :class:`PreviousActionReward` and the state primer. Use them as
        ``TransformedEnv(env, Compose(*memory.make_env_transforms(), *your_transforms))``
        (a flat ``Compose``: torchrl 0.14 cannot resolve specs through a nested one)."""
        return [
            InitTracker(),
            StepCounter(),
            PreviousActionReward(),
            self.make_tensordict_primer(),
        ]

    # ------------------------------------------------------------------ forward
    def _step_inputs(self, td: TensorDictBase) -> TensorDict:
        """The memory's step inputs, batch ``td.batch_size``, on its device (zeros where
        ``is_init``)."""
        n = len(td.batch_size)
        device = self.memory.device

        def step_entry(key: NestedKey) -> torch.Tensor:
            return per_step(td.get(key), n).to(device)

        if self.observation_key is None:
            observation = td.select(*self.memory.observation_space.spaces).to(device)
        else:
            observation = td.get(self.observation_key).to(device)
        return step_inputs(
            observation,
            action_indices(self.memory.action_space, td.get("prev_action").to(device), n),
            step_entry("prev_reward"),
            step_entry("step_count"),
            step_entry("is_init"),
        )

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        shape = tensordict.batch_size
        k, d = self.memory.memory_shape
        if self.recurrent_mode:
            if tensordict.ndim == 0:
                raise ValueError(
                    "SMTMemoryModule in recurrent mode needs a time dimension (the last batch "
                    "dim); got a tensordict with no batch dims. Use sequential mode for one step."
                )
            sequences = tensordict.reshape(-1, shape[-1])  # (B, T)
            state = sequences.get(self.state_key, None)
            first = None if state is None else state[:, 0].to(self.memory.device)
            memory = self.memory.scan(self._step_inputs(sequences), first)  # (B, T, K, d)
        else:
            steps = tensordict.reshape(-1)  # (N,)
            state = steps.get(self.state_key, None)
            memory = self.memory.transition(
                self._step_inputs(steps), None if state is None else state.to(self.memory.device)
            )[2]
        memory = memory.reshape(*shape, k, d).to(tensordict.device or memory.device)
        tensordict.set(self.out_key, memory.flatten(-2))
        tensordict.set(("next", self.state_key), memory)
        return tensordict

    @torch.no_grad()
    def fill_next(self, data: TensorDictBase) -> TensorDictBase:
        """Write ``("next", out_key)`` = ``m_{t+1} = f(m_t, x_{t+1})`` for every transition.

        What a critic reads to bootstrap from the next observation (GAE, TD targets). ``data`` is
        a collected batch (any shape): its ``("next", ...)`` entries hold ``o_{t+1}``, ``a_t``,
        ``r_t``, the step count and ``("next", state_key)`` = ``m_t``. Each row is computed on its
        own, so the result does not depend on the mode or on the order of the rows.
        """
        nxt = data.get("next")
        rows = nxt.reshape(-1)
        memory = self.memory.transition(
            self._step_inputs(rows), rows.get(self.state_key).to(self.memory.device)
        )[2]
        data.set(
            ("next", self.out_key),
            memory.reshape(*nxt.batch_size, -1).to(data.device or memory.device),
        )
        return data

    @property
    def memory_size(self) -> int:
        """Z: the width of ``out_key``."""
        return self.memory.memory_size

    def extra_repr(self) -> str:
        return f"in_keys={self.in_keys}, out_keys={self.out_keys}"
