"""One writer per folder: a second `smt-rl` command that would write where another one writes is
refused at once, naming the holder; a killed holder blocks nothing; a killed benchmark takes its
runs with it; refused runs change nothing on disk; OS errors are one line and exit code 2."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from agents.bench.runner import RunSpec, run_all
from agents.cli import main
from agents.config import TrainConfig
from agents.pipeline import benchmark, collect
from smt_rl.config import load_config
from smt_rl.errors import FolderLockedError
from smt_rl.locks import HOLDER_FILE, LOCK_FILE, FolderLock, read_holder
from smt_rl.smt.trainer import load_resume_state

ROOT = Path(__file__).resolve().parents[1]
SMT = "smt-rl"
# a memoryless PPO run on a short T-maze: the cheapest real `smt-rl train`
PPO = [
    "configs/tmaze.yaml", "algo=ppo", "env.kwargs.length=2", "env.num_envs=4",
    "sb3_ppo.n_steps=64", "eval.episodes=10", "device=cpu",
]  # fmt: skip
ROLLOUT = 64 * 4  # env steps per PPO log line


# ---------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> list[str]:
    """``smt-rl ARGS...`` as this interpreter runs it."""
    return [sys.executable, "-m", "agents", *args]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``smt-rl ARGS`` in the background, its output in ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(_cli(*args), cwd=ROOT, env=_env(), stdout=out, stderr=out)


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _wait_until(condition, proc: subprocess.Popen | None, what: str, timeout: float = 180):
    """Poll ``condition()`` until it is truthy (and return it); ``proc`` must not end before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc is None or proc.poll() is None, f"exit {proc.returncode} before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _holding(folder: Path, proc: subprocess.Popen) -> dict:
    """Wait until ``proc`` holds ``folder``'s lock (its holder record names it)."""
    return _wait_until(
        lambda: (h := read_holder(folder)) is not None and h["pid"] == proc.pid and h,
        proc,
        f"pid {proc.pid} to lock {folder}",
    )


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _kill_when_logged(proc: subprocess.Popen, metrics: Path, phase: str, step: int) -> None:
    """SIGKILL ``proc`` once ``metrics`` logs ``phase`` at ``step`` or later."""
    _wait_until(
        lambda: any(x["phase"] == phase and x["step"] >= step for x in _lines(metrics)),
        proc,
        f"{phase} step {step} in {metrics}",
        timeout=300,
    )
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _refusal(stderr: str, command: str) -> str:
    """The one error line of a refused command (no traceback before it)."""
    assert "Traceback" not in stderr, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"smt-rl {command}: error: "), stderr
    return line


def _assert_locked_out(done: subprocess.CompletedProcess, command: str, folder: Path, pid: int):
    """``done`` was refused at once by the lock ``pid`` holds on ``folder``, fix named."""
    assert done.returncode == 2, done.stderr
    line = _refusal(done.stderr, command)
    assert f"{folder} is in use by another smt-rl process (pid {pid}, started " in line, line
    assert line.endswith(("wait for it, or choose another out=.", "wait for it.")), line


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every file's bytes and mtime under ``folder`` (folders as None; {} when it is missing)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in folder.rglob("*")
    }


def _no_temp_files(root: Path) -> None:
    temp = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]
    assert not temp, temp


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _hint(line: str, command: str) -> list[str]:
    """The `smt-rl COMMAND ...` a message offers, as arguments."""
    found = re.search(rf"`smt-rl ({command} [^`]+)`", line)
    assert found, line
    return shlex.split(found.group(1))


# ---------------------------------------------------------------------------- the lock itself
def test_a_second_holder_is_refused_naming_the_first_and_a_killed_holder_blocks_nothing(tmp_path):
    folder = tmp_path / "new" / "run"
    with FolderLock(folder) as lock:
        assert not folder.exists()  # nothing written before claim()
        lock.claim()
        assert (folder / LOCK_FILE).is_file()
        assert read_holder(folder)["pid"] == os.getpid()
        with pytest.raises(FolderLockedError) as refused, FolderLock(folder):
            pass
    message = str(refused.value)
    assert message.startswith(f"{folder} is in use by another smt-rl process (pid {os.getpid()}")
    assert "started 20" in message and message.endswith("wait for it, or choose another out=.")
    assert not (tmp_path / "new").exists()  # a lock that wrote nothing leaves nothing

    # a holder in another process, killed with SIGKILL: the kernel drops its lock
    code = (
        "import sys, time\nfrom smt_rl.locks import FolderLock\n"
        "with FolderLock(sys.argv[1]) as lock:\n    lock.claim()\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, env=_env())
    try:
        _holding(folder, holder)
        with (
            pytest.raises(FolderLockedError, match=rf"pid {holder.pid}, started"),
            FolderLock(folder, "--out"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((folder / HOLDER_FILE).read_text())["pid"] == holder.pid  # stale record
    assert read_holder(folder) is None  # ... which nobody trusts
    with FolderLock(folder) as lock:  # taken at once
        lock.claim()
        assert read_holder(folder)["pid"] == os.getpid()
    assert not (folder / HOLDER_FILE).exists()


# ---------------------------------------------------------------------------- real processes
def test_two_trains_on_one_out_and_eval_while_it_trains(tmp_path):
    """The second train (same config, or another seed) and an eval are refused at once; the first
    finishes with one metrics line per step and its config.yaml as it wrote it."""
    run = tmp_path / "run"
    args = ["train", *PPO, "total_timesteps=40000", f"out={run}", "--no-progress"]
    first = _start(args, tmp_path / "first.log")
    try:
        _holding(run, first)
        _wait_until(lambda: (run / "config.yaml").is_file(), first, "config.yaml")
        config = (run / "config.yaml").read_bytes()
        seconds = [args, [*args[:-1], "seed=1", "--no-progress"], ["eval", str(run)]]
        procs = [
            subprocess.Popen(_cli(*a), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=PIPE)
            for a in seconds
        ]
        for args, proc in zip(seconds, procs, strict=True):
            _, err = proc.communicate(timeout=120)
            done = subprocess.CompletedProcess(args, proc.returncode, "", err.decode())
            _assert_locked_out(done, args[0], run, first.pid)
        assert first.poll() is None  # they did not wait for it
        assert first.wait(600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        first.kill()
    assert (run / "config.yaml").read_bytes() == config
    steps = [x["step"] for x in _lines(run / "metrics.jsonl")]
    assert steps == list(range(ROLLOUT, steps[-1] + 1, ROLLOUT)) and steps[-1] >= 40000
    assert not (run / "eval.json").exists()
    assert json.loads((run / "summary.json").read_text())["seed"] == 0


def test_pretrain_refused_while_one_runs_then_resumes_after_its_holder_is_killed(
    tmaze10_dataset, tmp_path
):
    out = tmp_path / "pre"
    args = [
        "pretrain", "configs/tmaze.yaml", "env.kwargs.length=10", f"data.path={tmaze10_dataset}",
        "smt.updates=200", "offline_dmt.updates=20", "smt.log_every=5", "smt.eval_every=1000",
        "smt.checkpoint_every=10", "model.embed_dim=32", "device=cpu", f"out={out}",
        "--no-progress",
    ]  # fmt: skip
    first = _start(args, tmp_path / "first.log")
    try:
        _holding(out, first)
        _assert_locked_out(_run(*args), "pretrain", out, first.pid)
        _kill_when_logged(first, out / "metrics.jsonl", "smt", 60)
    finally:
        first.kill()
    assert (out / "resume/state.pt").is_file()
    done = _run("pretrain", "--resume", str(out), "--no-progress")  # not blocked by the dead
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [(x["phase"], x["step"]) for x in _lines(out / "metrics.jsonl")]
    assert len(steps) == len(set(steps)) == 200 // 5 + 20 // 5  # resumed: no line twice
    assert not (out / HOLDER_FILE).exists()


def test_pretrain_under_torchrun_is_refused_on_every_rank_without_hanging(
    tmaze10_dataset, tmp_path
):
    """Rank 0 takes the lock; its refusal reaches the other ranks, which stop too."""
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "agents", "pretrain", "configs/tmaze.yaml", "env.kwargs.length=10",
        f"data.path={tmaze10_dataset}", "smt.updates=20", "device=cpu", f"out={out}",
        "--no-progress",
    ]  # fmt: skip
    with FolderLock(out) as lock:
        lock.claim()
        before = _snapshot(out)
        done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert _snapshot(out) == before
    assert done.returncode != 0
    refusal = (
        f"smt-rl pretrain: error: {out} is in use by another smt-rl process (pid {os.getpid()}"
    )
    assert done.stderr.count(refusal) == 2  # rank 0's, and rank 1's from it


def test_collect_into_one_dataset_folder_is_refused_while_one_collects(tmp_path):
    data = tmp_path / "data"
    args = ["collect", "smt_rl/PassiveTMaze-v0", "--episodes", "60000", "--out", str(data),
            "--num-envs", "8", "--env-kwargs", '{"length": 5}', "--no-progress"]  # fmt: skip
    first = _start(args, tmp_path / "first.log")
    try:
        _holding(data, first)
        done = _run(*[a if a != "60000" else "5" for a in args])
        assert done.returncode == 2
        line = _refusal(done.stderr, "collect")
        assert f"{data} is in use by another smt-rl process (pid {first.pid}" in line
        assert line.endswith("wait for it, or choose another --out.")
        assert first.wait(300) == 0
    finally:
        first.kill()
    meta = json.loads((data / "meta.json").read_text())
    assert meta["num_episodes"] == 60000 and len(meta["collections"]) == 1


def test_two_benchmarks_then_a_killed_benchmark_takes_its_runs_along_and_resumes(tmp_path):
    out = tmp_path / "bench"
    task = (
        "[{name: tmaze_2, config: configs/tmaze.yaml, budget: 12000, overrides: [env.kwargs."
        "length=2, env.num_envs=4, eval.episodes=10, sb3_ppo.n_steps=64]}]"
    )
    args = ["benchmark", "quick", "methods=[ppo]", "seeds=2", f"tasks={task}", f"out={out}"]
    first = _start([*args, "--jobs", "2"], tmp_path / "first.log")
    runs = [out / "tmaze_2" / "ppo" / f"seed_{s}" for s in (0, 1)]
    try:
        _holding(out, first)
        _assert_locked_out(_run(*args), "benchmark", out, first.pid)
        children = [
            _wait_until(lambda r=r: read_holder(r), first, f"a run holding {r}")["pid"]
            for r in runs
        ]
        assert all(_running(pid) for pid in children)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    _wait_until(lambda: not any(_running(p) for p in children), None, "the runs to die", 10)
    assert not any((r / "summary.json").exists() for r in runs)

    done = _run("benchmark", "--resume", str(out), "--jobs", "2", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all((r / "summary.json").is_file() for r in runs)
    for r in runs:  # both attempts' output, one after the other
        log = (r / "train.log").read_text().splitlines()
        assert sum(x.startswith("--- ") for x in log) == 2


def test_a_run_whose_folder_is_locked_fails_in_the_benchmark_with_the_lock_message(tmp_path):
    out = tmp_path / "bench"
    run = out / "tmaze_2" / "ppo" / "seed_0"
    run.mkdir(parents=True)
    (run / "train.log").write_text("an earlier attempt\n")
    lines: list[str] = []
    with FolderLock(run) as lock:
        lock.claim()
        result = benchmark("quick", overrides=["methods=[ppo]", f"out={out}"], echo=lines.append)
    assert result["failed"] == [str(run)]
    failed = next(x for x in lines if x.startswith("FAILED"))
    assert "(exit 2)" in failed and "Traceback" not in failed
    assert f"{run} is in use by another smt-rl process (pid {os.getpid()}" in failed
    assert "an earlier attempt" not in failed  # the tail of this attempt only
    assert (run / "train.log").read_text().startswith("an earlier attempt\n")  # not truncated


def test_an_interrupted_runner_kills_its_runs(tmp_path):
    pid_file = tmp_path / "pid"
    sleeper = [sys.executable, "-c",
               f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
               "time.sleep(120)"]  # fmt: skip
    spec = RunSpec("t", "m", 0, tmp_path / "run", sleeper)

    def echo(line: str) -> None:
        if line.startswith("started"):
            _wait_until(lambda: pid_file.is_file() and pid_file.read_text(), None, "the pid")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_all([spec], echo=echo)
    assert not _running(int(pid_file.read_text()))


# ---------------------------------------------------------------------------- refused runs
def test_refused_trains_leave_the_run_folder_as_it_was_and_their_hints_work(tmp_path, capsys):
    """Another config's unfinished pretraining, an RL resume state of another budget, a finished
    pretraining with other settings, data.path of another task, a locked folder: each refused
    before any write (every file's bytes and mtime kept); the resume hints printed are commands
    that continue the run."""
    run = tmp_path / "run"
    settings = [
        "configs/tmaze.yaml", "env.kwargs.length=5", "data.episodes=200", "smt.updates=120",
        "offline_dmt.updates=10", "smt.log_every=5", "smt.eval_every=1000",
        "smt.checkpoint_every=10", "ppo.n_steps=32", "ppo.resume_every=1",
        "total_timesteps=4096", "eval.episodes=10", "device=cpu", f"out={run}",
    ]  # fmt: skip

    def refused(*overrides: str) -> str:
        """Run `smt-rl train` with ``overrides`` in this process: refused, nothing changed."""
        before = _snapshot(run)
        assert main(["train", *settings, *overrides, "--no-progress"]) == 2
        assert _snapshot(run) == before
        return _refusal(capsys.readouterr().err, "train")

    first = _start(["train", *settings, "--no-progress"], tmp_path / "first.log")
    try:
        _kill_when_logged(first, run / "pretrain" / "metrics.jsonl", "smt", 30)
    finally:
        first.kill()
    line = refused("seed=1")  # today's bug: it rewrote config.yaml, then no resume worked
    assert "another config" in line
    hint = _hint(line, "train")
    assert hint == ["train", "--resume", str(run)]

    second = _start([*hint, "--no-progress"], tmp_path / "second.log")
    try:
        _kill_when_logged(second, run / "metrics.jsonl", "rl", 1024)
    finally:
        second.kill()
    assert (run / "resume" / "rl_state.pt").is_file()
    line = refused("total_timesteps=8192")
    assert "total_timesteps=4096" in line and f"`smt-rl train --resume {run}`" in line
    assert "other settings (smt differ)" in refused("smt.updates=100")

    other = tmp_path / "tm7"
    collect("smt_rl/PassiveTMaze-v0", 4, other, env_kwargs={"length": 7}, progress=False)
    assert re.search(r"data\.path .* holds task .*length.: 7", refused(f"data.path={other}"))
    with FolderLock(run) as lock:
        lock.claim()
        assert f"(pid {os.getpid()}, started " in refused()
    pretrained = (run / "pretrain" / "summary.json").stat().st_mtime_ns

    done = _run(*hint, "--no-progress", timeout=600)  # the hint continues the run to its end
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "pretrain" / "summary.json").stat().st_mtime_ns == pretrained
    steps = [x["step"] for x in _lines(run / "metrics.jsonl") if x["phase"] == "rl"]
    assert steps == list(range(256, 4097, 256))
    assert json.loads((run / "summary.json").read_text())["seed"] == 0


def test_a_refused_train_does_not_create_its_out_folder(tmaze10_dataset, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    args = ["configs/tmaze.yaml", "env.kwargs.length=5", f"data.path={tmaze10_dataset}"]
    assert main(["train", *args, f"out={out}", "--no-progress"]) == 2
    assert "holds task" in _refusal(capsys.readouterr().err, "train")
    assert not (tmp_path / "new").exists()


def test_a_refused_pretrain_names_a_resume_command_that_works_for_that_folder(tmp_path):
    from agents.pipeline import resume_command

    (tmp_path / "p").mkdir()
    assert resume_command(tmp_path / "p") is None  # nothing to continue with: no command
    (tmp_path / "p" / "config.yaml").write_text("seed: 0\n")
    assert resume_command(tmp_path / "p") == f"smt-rl pretrain --resume {tmp_path / 'p'}"
    (tmp_path / "t" / "pretrain").mkdir(parents=True)
    (tmp_path / "t" / "config.yaml").write_text("seed: 0\n")
    assert resume_command(tmp_path / "t" / "pretrain") == f"smt-rl train --resume {tmp_path / 't'}"


# ---------------------------------------------------------------------------- out= and OS errors
def test_out_a_file_under_a_file_or_not_writable_is_one_line_before_any_write(
    tmp_path, capsys, monkeypatch
):
    file = tmp_path / "file"
    file.write_text("not a folder")
    cases = [
        (["train", *PPO, f"out={file}"], f"out={file} is a file, not a folder; choose another"),
        (["train", *PPO, f"out={file / 'x'}"], f"out={file / 'x'} lies under {str(file)!r}"),
        (["collect", "smt_rl/PassiveTMaze-v0", "--episodes", "2", "--out", str(file)],
         f"--out {file} is a file, not a folder; choose another --out"),
        (["benchmark", "quick", f"out={file}"], f"out={file} is a file"),
    ]  # fmt: skip
    for args, message in cases:
        assert main(args) == 2
        assert message in _refusal(capsys.readouterr().err, args[0])
    assert file.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [file]

    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    if not os.access(locked, os.W_OK):  # chmod binds (not root)
        assert main(["train", *PPO, f"out={locked / 'run'}"]) == 2
        line = _refusal(capsys.readouterr().err, "train")
        assert f"out={locked / 'run'}: {str(locked)!r} is not writable" in line
    locked.chmod(0o755)
    # a write the file system refuses (root ignores chmod: the fault is injected instead)
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(locked)):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["train", *PPO, f"out={locked / 'run'}", "--no-progress"]) == 2
    line = _refusal(capsys.readouterr().err, "train")
    assert line.endswith(
        f"cannot access {locked / 'run' / 'config.yaml'}: [Errno 13] Permission denied; check "
        "the permissions or choose another out="
    )
    assert list(locked.iterdir()) == []  # the run folder it made is gone again


def _full_disk(monkeypatch, when) -> None:
    """``os.fsync`` of a file whose name ``when`` accepts fails with ENOSPC, as on a full disk
    (the written bytes never reach it; the atomic writer must leave no temporary file)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if when(Path(os.readlink(f"/proc/self/fd/{fd}"))):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    args = ["train", *PPO, "total_timesteps=1024", f"out={run}", "--no-progress"]
    with monkeypatch.context() as patch:  # at the first write: nothing is left
        _full_disk(patch, lambda path: str(path).startswith(str(tmp_path)))
        assert main(args) == 2
    line = _refusal(capsys.readouterr().err, "train")
    assert line.endswith(
        f"cannot write {run / 'config.yaml'}: [Errno 28] No space left on device; free some "
        "space or choose another out="
    )
    assert not run.exists()

    assert main(args) == 0  # a finished run, then the same run again on a disk that fills up
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (run / "summary.json", run / "config.yaml")}
    with monkeypatch.context() as patch:
        _full_disk(patch, lambda path: path.name.startswith(".summary.json"))
        assert main(args) == 2
    line = _refusal(capsys.readouterr().err, "train")
    assert line.startswith(f"smt-rl train: error: cannot write {run / 'summary.json'}: [Errno 28]")
    assert {p: p.read_bytes() for p in before} == before  # the earlier files are whole
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["kind"]
    assert all(_lines(run / "metrics.jsonl"))
    _no_temp_files(run)
    assert read_holder(run) is None and not (run / HOLDER_FILE).exists()  # released


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_a_disk_that_fills_up_mid_pretraining_leaves_a_run_that_resumes(
    tmp_path, capsys, monkeypatch
):
    """ENOSPC at the second resume state of a train's pretraining: one line, exit 2, the first
    state whole and no temporary file; freed, `--resume` finishes the run."""
    run = tmp_path / "run"
    args = [
        "train", "configs/tmaze.yaml", "env.kwargs.length=5", "data.episodes=100",
        "smt.updates=40", "offline_dmt.updates=5", "smt.eval_every=1000",
        "smt.checkpoint_every=10", "ppo.n_steps=32", "total_timesteps=1024", "eval.episodes=5",
        "device=cpu", f"out={run}", "--no-progress",
    ]  # fmt: skip
    states: list[Path] = []

    def second_state(path: Path) -> bool:
        if path.name.startswith(".state.pt."):
            states.append(path)
        return len(states) == 2 and path == states[-1]

    with monkeypatch.context() as patch:
        _full_disk(patch, second_state)
        assert main(args) == 2
    state = run / "pretrain" / "resume" / "state.pt"
    line = _refusal(capsys.readouterr().err, "train")
    assert line.endswith(
        f"cannot write {state}: [Errno 28] No space left on device; free some space or choose "
        "another out="
    )
    _no_temp_files(run)
    cfg = load_config(TrainConfig, run / "config.yaml")
    assert load_resume_state(run / "pretrain", cfg, "smt")["runner"]["update"] == 10  # whole
    config = (run / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert (run / "config.yaml").read_bytes() == config and (run / "summary.json").is_file()
    steps = [(x["phase"], x["step"]) for x in _lines(run / "pretrain" / "metrics.jsonl")]
    assert len(steps) == len(set(steps))


def test_an_interrupt_exits_130_with_one_line_and_releases_the_lock(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("agents.pipeline._train_in", interrupted)
    run = tmp_path / "run"
    assert main(["train", *PPO, f"out={run}", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "smt-rl train: interrupted" and "Traceback" not in err
    with FolderLock(run) as lock:  # free again
        lock.claim()
