"""The SMT agent: PPO on the memory module's own state, refined on-policy by DMT (no BPTT).

- :mod:`agents.smt_ppo.agent`: :class:`SMTPPO`, its acting and its PPO x DMT loop;
- :mod:`agents.smt_ppo.ppo`: GAE and the clipped PPO update as plain functions;
- :mod:`agents.smt_ppo.loop`: what the loop carries between rollouts, and its resume state;
- :mod:`agents.smt_ppo.config`: its config sections (light: no torch import).
"""

__all__ = ["SMTPPO", "AgentState"]


def __getattr__(name: str):
    """``SMTPPO`` and ``AgentState`` are imported on first use, so that reading configs does not
    import the agent's dependencies."""
    if name in __all__:
        from agents.smt_ppo import agent

        return getattr(agent, name)
    raise AttributeError(name)
