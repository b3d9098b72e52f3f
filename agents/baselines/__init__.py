"""Baselines run by `smt-rl train` with ``algo: ppo | recurrent_ppo | gru_ppo``.

Each is an :class:`agents.base.AgentBase` registered in :mod:`agents.registry`, so the pipeline,
the evaluation and the benchmark harness treat every algorithm alike.
"""
