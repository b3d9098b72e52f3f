"""The README's two opening commands and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _opening_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README.md must open with a bash block holding the two commands"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_opens_with_setup_and_test_commands():
    commands = _opening_commands()
    assert len(commands) == 2
    setup_and_run, test = commands
    assert "python3 -m venv .venv" in setup_and_run and "smt-rl " in setup_and_run
    assert "pytest" in test


def test_ci_runs_the_readme_setup_and_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    setup_and_run, test = _opening_commands()
    setup_steps = [s.strip() for s in setup_and_run.split("&&") if "smt-rl " not in s]
    for step in setup_steps:
        assert step in ci_lines, f".ci/run lacks the README's set-up step {step!r}"
    assert test.strip() in ci_lines, ".ci/run must run the README's test command"
