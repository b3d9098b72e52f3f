"""The dependency direction of DESIGN.md section 3: the core (smt_rl) imports neither the agents
nor the tasks, the tasks (envs) import neither the core nor the agents, and nothing below the
command line imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # package -> top-level modules it must not import
    "smt_rl": {"agents", "envs"},
    "envs": {"agents", "smt_rl"},
    "agents": {"agents.cli"},
}


def _imports(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (any depth)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", FORBIDDEN)
def test_imports_only_point_down(package):
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name in ("cli.py", "__main__.py") and package == "agents":
            continue
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                offending.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offending == []
