"""Installs that fit the user: a core install (no extras) imports and trains without sb3-contrib,
POPGym and matplotlib; what needs one of them fails naming the extra that installs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.baselines.sb3 import RecurrentPPOAgent
from agents.bench.plots import plot_curves, plot_success_vs_memory
from agents.cli import main
from agents.registry import ALGORITHMS, agent_class, check_installed
from envs import MissingPackageError, make_env
from envs.registry import OPTIONAL_PROVIDERS
from smt_rl.errors import MissingExtraError
from smt_rl.extras import OPTIONAL, require

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = tuple(OPTIONAL)  # sb3_contrib, popgym, matplotlib, ray

# Run first in a child python: any import of a blocked module fails as if it were not installed,
# and an attempt made by the project's own code (smt_rl, agents, envs; not a third party's
# optional try-import, e.g. torchrl's of ray) is recorded (by its top-level name) in ATTEMPTS.
BLOCKER = f"""
import sys
ATTEMPTS = []
_OURS = [{str(ROOT / "smt_rl")!r}, {str(ROOT / "agents")!r}, {str(ROOT / "envs")!r}]
def _importer():
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen") or "importlib" in frame.f_code.co_filename
    ):
        frame = frame.f_back
    return "" if frame is None else frame.f_code.co_filename
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            if _importer().startswith(tuple(_OURS)):
                ATTEMPTS.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
sys.meta_path.insert(0, _Blocker())
import importlib.util as _util
_find_spec = _util.find_spec
def _probe(name, package=None):  # probing (torchrl probes for ray) finds nothing, as if absent
    if name.split(".")[0] in {BLOCKED!r}:
        return None
    return _find_spec(name, package)
_util.find_spec = _probe
for _name in list(sys.modules):
    if _name.split(".")[0] in {BLOCKED!r}:
        del sys.modules[_name]
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_core_imports_and_builds_the_tmaze_agent_without_the_extras():
    code = """
import json
import agents, envs, smt_rl
from agents.config import TrainConfig
from agents.pipeline import _check_task
from agents.registry import agent_class
from smt_rl.config import load_config

cfg = load_config(TrainConfig, "configs/tmaze.yaml", ["env.kwargs.length=10"])
_check_task(cfg)  # builds the task, checks the SMT model fits it
classes = [agent_class(a).__name__ for a in ("smt_ppo", "ppo", "gru_ppo")]
print(json.dumps({"attempts": ATTEMPTS, "classes": classes}))
"""
    result = _run_blocked(code)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["attempts"] == []  # nothing of ours even tried to import an extra
    assert out["classes"] == ["SMTPPO", "SB3PPOAgent", "GRUPPOAgent"]


def test_core_cli_names_the_extra_and_benchmark_tables_without_plots(tmp_path):
    code = f"""
import json
from agents.cli import main
from agents.pipeline import benchmark

codes = [
    main(["train", "configs/tmaze.yaml", "algo=recurrent_ppo", "out={tmp_path / "r"}"]),
    main(["train", "configs/tmaze.yaml", "env.id=popgym-RepeatFirstEasy-v0", "env.kwargs={{}}",
          "out={tmp_path / "p"}"]),
]
lines = []
result = benchmark("quick", overrides=["out={tmp_path / "b"}"], run=False, echo=lines.append)
print(json.dumps({{"codes": codes, "plots": result["plots"], "lines": lines}}))
"""
    result = _run_blocked(code)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["codes"] == [2, 2]
    assert "algo=recurrent_ppo: the 'sb3-contrib' package is not installed" in result.stderr
    assert "pip install 'smt-rl[baselines]'" in result.stderr
    assert "POPGym tasks: the 'popgym' package is not installed" in result.stderr
    assert "pip install 'smt-rl[popgym]'" in result.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()  # refused up front
    assert out["plots"] == [] and (tmp_path / "b" / "results.md").is_file()
    assert any("plots skipped" in ln and "smt-rl[plots]" in ln for ln in out["lines"])


@pytest.fixture
def blocked(monkeypatch):
    """Imports of the optional modules fail in this process, as in a core install."""
    for name in [n for n in sys.modules if n.split(".")[0] in BLOCKED]:
        monkeypatch.delitem(sys.modules, name)
    for name in BLOCKED:
        monkeypatch.setitem(sys.modules, name, None)


def test_a_popgym_task_names_the_popgym_extra(blocked):
    with pytest.raises(MissingPackageError, match=r"pip install 'smt-rl\[popgym\]'") as info:
        make_env("popgym-RepeatFirstEasy-v0")
    assert "POPGym tasks" in str(info.value) and isinstance(info.value, ImportError)
    with pytest.raises(MissingPackageError, match=r"smt-rl\[popgym\]"):
        make_env("smt_rl/popgym-CountRecallEasy-v0")


def test_recurrent_ppo_names_the_baselines_extra(blocked):
    for call in (
        lambda: agent_class("recurrent_ppo"),
        lambda: check_installed("recurrent_ppo"),
        RecurrentPPOAgent.algorithm,
    ):
        with pytest.raises(MissingExtraError, match=r"pip install 'smt-rl\[baselines\]'"):
            call()
    assert agent_class("ppo").algorithm().__name__ == "PPO"  # stable-baselines3 stays core


def test_plots_name_the_plots_extra(blocked, tmp_path):
    with pytest.raises(MissingExtraError, match=r"benchmark plots: .*smt-rl\[plots\]"):
        plot_curves([], tmp_path)
    row = {"task": "t", "method": "m", "success": 1.0, "success_ci": [1.0, 1.0]}
    with pytest.raises(MissingExtraError, match=r"smt-rl\[plots\]"):
        plot_success_vs_memory([row], {"t": 10}, tmp_path)


def test_require_returns_the_module_and_passes_other_import_errors_on(monkeypatch):
    assert require("matplotlib", "x").__name__ == "matplotlib"  # installed here (dev, all)
    monkeypatch.setitem(sys.modules, "popgym", None)
    with pytest.raises(MissingExtraError) as info:
        require("popgym", "POPGym tasks")
    assert str(info.value) == (
        "POPGym tasks: the 'popgym' package is not installed (a core install leaves it out); "
        "pip install 'smt-rl[popgym]', or 'smt-rl[all]' for every extra."
    )
    with pytest.raises(KeyError, match="not an optional module"):
        require("numpy", "arrays")


def test_the_cli_reports_a_missing_extra_in_one_line(blocked, tmp_path, capsys):
    assert main(["train", "configs/tmaze.yaml", "algo=recurrent_ppo", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "smt-rl[baselines]" in err


def test_pyproject_extras_match_the_optional_modules():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=~! ]", r, maxsplit=1)[0] for r in requirements}

    for module, optional in OPTIONAL.items():
        assert optional.package in names(extras[optional.extra]), (module, optional)
        assert optional.package not in core, f"{optional.package} must not be a core dependency"
    for package, (_, extra) in OPTIONAL_PROVIDERS.items():
        assert OPTIONAL[package].extra == extra  # envs names the same extra
    (everything,) = extras["all"]  # smt-rl[every other extra but dev]
    assert everything.startswith("smt-rl[") and everything.endswith("]")
    assert set(everything[7:-1].split(",")) == set(extras) - {"all", "dev"}
    assert {o.extra for o in OPTIONAL.values()} <= set(extras)
    assert {"pytest", "ruff"} <= names(extras["dev"])
    needs = {a.needs for a in ALGORITHMS.values()} - {None}
    assert needs <= set(OPTIONAL)


def test_the_ray_engine_names_the_ray_extra(blocked, tmp_path):
    from agents.pipeline import benchmark

    with pytest.raises(MissingExtraError, match=r"--engine ray.*pip install 'smt-rl\[ray\]'"):
        benchmark(
            "quick",
            overrides=[f"out={tmp_path / 'b'}", "methods=[smt_ppo,ppo]"],
            echo=lambda _: None,
            engine="ray",
        )
    assert not (tmp_path / "b" / "tmaze_2").exists()  # no run started
