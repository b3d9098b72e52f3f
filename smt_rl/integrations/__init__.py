"""SMT memory inside other pipelines: a torchrl module, torchrl losses that train it (SMT and
DMT), and a gymnasium wrapper (for stable-baselines3 and any other library that takes a gymnasium
env).

``PretrainedMemory`` is light; the torchrl pieces import torchrl, so they load on first use.
"""

from smt_rl.integrations.memory import PretrainedMemory

__all__ = [
    "DMTLoss",
    "PretrainedMemory",
    "PreviousActionReward",
    "SMTLoss",
    "SMTMemoryModule",
    "SMTMemoryWrapper",
]


def __getattr__(name: str):
    if name in ("SMTMemoryModule", "PreviousActionReward"):
        from smt_rl.integrations import torchrl as _torchrl

        return getattr(_torchrl, name)
    if name in ("SMTLoss", "DMTLoss"):
        from smt_rl.integrations import torchrl_losses

        return getattr(torchrl_losses, name)
    if name == "SMTMemoryWrapper":
        from smt_rl.integrations.gym_wrapper import SMTMemoryWrapper

        return SMTMemoryWrapper
    raise AttributeError(name)
