"""SMT memory inside other pipelines: a torchrl module, torchrl losses that train it (SMT and
DMT), a gymnasium wrapper (for stable-baselines3 and any other library that takes a gymnasium env)
and a stable-baselines3 vector-env wrapper that steps the memory of all sub-environments at once.

``PretrainedMemory`` is light; the others import torchrl or stable-baselines3, so they load on
first use.
"""

from smt_rl.integrations.memory import PretrainedMemory

__all__ = [
    "DMTLoss",
    "PretrainedMemory",
    "PreviousActionReward",
    "SMTLoss",
    "SMTMemoryModule",
    "SMTMemoryVecWrapper",
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
    if name == "SMTMemoryVecWrapper":
        from smt_rl.integrations.sb3_vec import SMTMemoryVecWrapper

        return SMTMemoryVecWrapper
    raise AttributeError(name)
