"""The SMT agent: PPO on the memory module's own state, refined on-policy by DMT (no BPTT).

- :mod:`agents.smt_ppo.agent`: :class:`SMTPPO`, its acting and its PPO x DMT loop;
- :mod:`agents.smt_ppo.ppo`: GAE and the clipped PPO update as plain functions;
- :mod:`agents.smt_ppo.loop`: what the loop carries between rollouts, and its resume state.
"""

from agents.smt_ppo.agent import SMTPPO, AgentState

__all__ = ["SMTPPO", "AgentState"]
