"""The benchmark harness: suites, runs as processes, resumability, tables, plots, compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.bench import aggregate, load_suite, markdown_table, read_run, run_specs
from agents.bench.results import ResultsError, RunRecord, bootstrap_ci, time_to_success
from agents.cli import main
from agents.pipeline import benchmark, compare, evaluate, train
from smt_rl.errors import ConfigError

ALL_METHODS = {"smt_ppo", "ppo", "recurrent_ppo", "gru_ppo"}


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_agreement():
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    low, high = bootstrap_ci([0.0, 1.0, 1.0, 0.0, 1.0])
    assert low < 0.6 < high and low >= 0.0 and high <= 1.0
    tight = bootstrap_ci([0.58, 0.6, 0.62, 0.6, 0.6])
    assert tight[1] - tight[0] < (high - low) / 5
    assert bootstrap_ci([0.0, 1.0, 1.0]) == bootstrap_ci([0.0, 1.0, 1.0])  # seeded


def test_every_shipped_suite_loads_and_names_real_configs():
    for name, tasks in (("quick", 1), ("memory_length", 6), ("popgym", 5), ("minigrid", 3)):
        suite = load_suite(name)
        assert len(suite.tasks) == tasks
        assert set(suite.methods) == ALL_METHODS
        specs = run_specs(suite)
        runs = sum(len(t.methods or suite.methods) for t in suite.tasks)
        assert len(specs) == runs * suite.seeds
        assert all("budget_includes_data=true" in s.command for s in specs)
    suite = load_suite("memory_length")
    assert [t.memory_length for t in suite.tasks] == [10, 30, 100, 300, 1000, 3000]
    # a task may run a subset of the methods: length 3000 is smt_ppo's alone
    assert {s.method for s in run_specs(suite) if s.task == "tmaze_3000"} == {"smt_ppo"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tasks: []", "tasks"),
        ("methods: [smt_ppo, lstm]\ntasks: [{name: a, config: configs/tmaze.yaml}]", "methods"),
        ("tasks: [{name: a, config: nope.yaml}]", r"tasks\[0\]\.config"),
        (
            "tasks: [{name: a, config: configs/tmaze.yaml}, {name: a, config: configs/tmaze.yaml}]",
            r"tasks\[1\]\.name",
        ),
        ("tasks: [{name: a, config: configs/tmaze.yaml, budjet: 5}]", "budjet"),
        ("tasks: [{name: a, config: configs/tmaze.yaml, method_overrides: {dqn: []}}]", "dqn"),
    ],
)
def test_bad_suites_fail_naming_the_field(tmp_path, text, match):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_suite(str(path))
    with pytest.raises(ConfigError, match="configs/suites"):
        load_suite("no_such_suite")


def test_compare_refuses_unfinished_runs(tmp_path):
    (tmp_path / "config.yaml").write_text("algo: ppo\n")
    with pytest.raises(ResultsError, match="not a finished run"):
        read_run(tmp_path)
    with pytest.raises(ConfigError):
        compare([])


def test_quick_suite_runs_every_method_writes_table_and_plots_and_resumes(tmp_path, capsys):
    """The CI-sized suite: every method once on T-maze length 2 (who wins is not asserted)."""
    out = tmp_path / "quick"
    lines: list[str] = []
    result = benchmark("quick", jobs=2, overrides=[f"out={out}"], echo=lines.append)
    assert result["failed"] == []
    rows = {row["method"]: row for row in result["rows"]}
    assert set(rows) == ALL_METHODS
    for method, row in rows.items():
        assert row["task"] == "tmaze_2" and row["seeds"] == [0]
        assert row["runs"] == [str(out / "tmaze_2" / method / "seed_0")]
        assert 0.0 <= row["success"]["mean"] <= 1.0
        low, high = row["success"]["ci95"]
        assert low == high == row["success"]["mean"]  # one seed
        # equal budget: every method used ~3,000 env steps, smt_ppo's logged data included
        assert 3000 <= row["env_steps"] <= 3000 + 512, (method, row["env_steps"])
        summary = json.loads(Path(row["runs"][0], "summary.json").read_text())
        assert summary["algo"] == method and summary["eval/episodes"] == 20
    smt = json.loads((out / "tmaze_2" / "smt_ppo" / "seed_0" / "summary.json").read_text())
    assert smt["pretrain_env_steps"] > 0
    stored = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in stored["rows"]} == ALL_METHODS
    table = (out / "results.md").read_text()
    assert all(f"| tmaze_2 | {m} | 1 |" in table for m in ALL_METHODS)
    plots = {Path(p).name for p in result["plots"]}
    assert plots == {
        "return_vs_steps_tmaze_2.png",
        "return_vs_wall_tmaze_2.png",
        "success_vs_memory_length.png",
    }
    for name in plots:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # `smt-rl eval` reloads every kind of agent from its safetensors checkpoint
    for method, row in rows.items():
        again_eval = evaluate(row["runs"][0], episodes=5)
        assert again_eval["algo"] == method and again_eval["eval/episodes"] == 5

    # a second call starts nothing: every run is finished
    before = {m: Path(rows[m]["runs"][0], "summary.json").stat().st_mtime_ns for m in rows}
    lines.clear()
    again = benchmark("quick", jobs=2, overrides=[f"out={out}"], echo=lines.append)
    assert lines == ["4 runs already finished: skipped"]
    assert {m: Path(rows[m]["runs"][0], "summary.json").stat().st_mtime_ns for m in rows} == before
    assert again["rows"] == result["rows"]

    # --report-only: nothing started, the same table
    lines.clear()
    report = benchmark("quick", overrides=[f"out={out}"], echo=lines.append, run=False)
    assert lines == [] and report["rows"] == result["rows"]

    # --resume OUT: started again as it was first started (suite, overrides) from its folder
    assert json.loads((out / "benchmark.json").read_text())["overrides"] == [f"out={out}"]
    assert main(["benchmark", "--resume", str(out), "--jobs", "2"]) == 0
    assert "4 runs already finished: skipped" in capsys.readouterr().out
    assert main(["benchmark", "--resume", str(tmp_path / "nothing")]) != 0
    assert "no benchmark.json" in capsys.readouterr().err

    # compare reads the same runs into the same table
    runs = [r for row in result["rows"] for r in row["runs"]]
    compared = compare(runs)
    assert [(r["method"], r["success"]) for r in compared] == [
        (r["method"], r["success"]) for r in aggregate([read_run(p) for p in runs])
    ]
    assert main(["compare", *runs]) == 0
    printed = capsys.readouterr().out
    assert printed.count("smt_rl/PassiveTMaze-v0(length=2)") == 4
    assert markdown_table(compared).splitlines()[0] == printed.splitlines()[0]
    assert np.isfinite([r["wall_s"] for r in compared]).all()


def test_a_budget_smaller_than_the_logged_data_is_refused(tmp_path):
    """budget_includes_data: the SMT agent's RL phase gets the budget minus its data; a budget
    the data alone exceeds stops with the fix named, before any RL step."""
    overrides = [
        "env.kwargs.length=2",
        "data.episodes=20",
        "total_timesteps=50",
        "budget_includes_data=true",
        f"out={tmp_path / 'run'}",
    ]
    with pytest.raises(ConfigError, match="total_timesteps=50 with budget_includes_data"):
        train("configs/tmaze.yaml", overrides, progress=False)
    assert not (tmp_path / "run" / "pretrain").exists()


def test_time_to_success_is_the_first_logged_wall_clock_at_the_threshold():
    curve = [
        {"step": 100, "rollout/success_rate": 0.5, "time/wall_s": 10.0},
        {"step": 200, "rollout/success_rate": 0.92, "time/wall_s": 20.0},
        {"step": 300, "rollout/success_rate": 0.99, "time/wall_s": 30.0},
    ]
    record = RunRecord(Path("."), "t", "smt_ppo", 0, {}, curve)
    assert time_to_success(record) == 20.0
    assert time_to_success(record, 0.95) == 30.0
    assert time_to_success(record, 1.0) is None
    no_success = RunRecord(Path("."), "t", "ppo", 0, {}, [{"step": 1, "time/wall_s": 1.0}])
    assert time_to_success(no_success) is None
    rows = aggregate([record, RunRecord(Path("x"), "t", "smt_ppo", 1, {}, curve[:1])])
    assert rows[0]["time_to_success"] == [20.0, None]
    assert "1/2 seeds, 20 s" in markdown_table(rows)


def test_quick_suite_runs_through_a_local_ray_with_two_cpus(tmp_path):
    """The same suite as one Ray task per run on a local Ray of 2 CPUs: the same run folders,
    table and skipping of finished runs as the local engine."""
    pytest.importorskip("ray")
    out = tmp_path / "quick_ray"
    lines: list[str] = []
    result = benchmark(
        "quick", overrides=[f"out={out}"], echo=lines.append, engine="ray", ray_cpus=2
    )
    assert result["failed"] == []
    assert {row["method"] for row in result["rows"]} == ALL_METHODS
    assert sum(line.startswith("finished") for line in lines) == 4
    for row in result["rows"]:
        assert 3000 <= row["env_steps"] <= 3000 + 512
        log = Path(row["runs"][0], "train.log").read_text()
        assert "[ray]" in log  # started by a Ray task
    lines.clear()
    again = benchmark("quick", overrides=[f"out={out}"], echo=lines.append, engine="ray")
    assert lines == ["4 runs already finished: skipped"] and again["rows"] == result["rows"]
    with pytest.raises(ConfigError, match="engine"):
        benchmark("quick", overrides=[f"out={out}"], echo=lines.append, engine="dask")
