"""One writer per folder: every command that writes into a run folder, a dataset folder or a
benchmark folder holds that folder's lock while it runs, and a second writer is refused at once.

The lock is an OS file lock (``flock`` through :mod:`filelock`) on ``FOLDER/.smt_rl.lock``: the
kernel drops it when its holder exits in any way, SIGKILL included, so a dead run never blocks the
next one. Beside it, ``FOLDER/.smt_rl.lock.json`` says who holds it (pid, host, command line, start
time), for the message that refuses the second writer.

Usage (every check reads only; :meth:`FolderLock.claim` comes before the first write, so a run
refused by a check, or by the lock, leaves the folder as it was)::

    with FolderLock(run_dir, "out=") as lock:  # refused here when a live process holds it
        check_everything(run_dir)
        lock.claim()                           # creates the folder and the lock if needed
        write(run_dir / "config.yaml")
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from smt_rl.errors import ConfigError, FolderLockedError
from smt_rl.io import atomic_write_json, remove_temp_files

LOCK_FILE = ".smt_rl.lock"  # the flock'ed file (empty; it stays, so waiters share one inode)
HOLDER_FILE = ".smt_rl.lock.json"  # who holds the lock, written once it is claimed
LOCK_FILES = (LOCK_FILE, HOLDER_FILE)


def is_lock_file(path: Path) -> bool:
    """True for the lock's own files (a folder holding nothing else counts as empty)."""
    return path.name in LOCK_FILES


def _named(option: str | None, folder: Path) -> str:
    """How the user chose ``folder``: ``out=runs/x``, ``--out runs/x``, or the bare path."""
    if option is None:
        return repr(str(folder))
    return f"{option}{folder}" if option.endswith("=") else f"{option} {folder}"


def check_writable_folder(folder: Path, option: str | None = "out=") -> None:
    """Refuse, before anything is written, a folder that cannot be one this process writes in.

    Raises:
        ConfigError: ``folder`` is an existing file, lies under a file, or its nearest existing
            folder is not writable (permissions, a read-only file system).
    """
    named = _named(option, folder)
    other = f"choose another {option}" if option else "choose another folder"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{named} is a file, not a folder; {other} (or move the file away).")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{named} lies under {str(existing)!r}, which is a file; {other}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{named}: {str(existing)!r} is not writable (permissions or a read-only file "
            f"system); {other} in a place you can write to."
        )


class FolderLock:
    """The exclusive lock of one folder, for a ``with`` block (see the module docstring).

    Entering takes the lock when the folder has one (a second writer is refused here, before it
    checks anything); :meth:`claim` creates the folder and the lock when they are missing, takes
    it, and records the holder. Leaving releases it; a folder the lock created and nothing else
    wrote into is removed again.

    Args:
        folder: the folder the command writes into.
        option: how the user names that folder (``"out="``, ``"--out"``), for the messages;
            None when there is no other choice (``smt-rl eval RUN_DIR``).
    """

    def __init__(self, folder: str | os.PathLike, option: str | None = "out=") -> None:
        self.folder = Path(folder)
        self.option = option
        self._lock = FileLock(self.folder / LOCK_FILE)
        self._made: list[Path] = []  # folders claim() created, outermost first
        self._wrote_holder = False

    def __enter__(self) -> FolderLock:
        check_writable_folder(self.folder, self.option)
        if (self.folder / LOCK_FILE).is_file():
            self._take()
        return self

    def claim(self) -> None:
        """Hold the lock from now on (taking it now if the folder had none) and record the holder;
        call it after the checks, before the first write."""
        if not self._lock.is_locked:
            chain = (*reversed(self.folder.parents), self.folder)
            self._made = [p for p in chain if not p.exists()]
            self.folder.mkdir(parents=True, exist_ok=True)
            self._take()
        self._write_holder()
        # writes of a dead holder killed before their rename (not in folders locked on their
        # own, such as a benchmark's runs)
        remove_temp_files(self.folder, skip=lambda sub: (sub / LOCK_FILE).exists())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._lock.is_locked:
            return
        try:
            self._clean_up()
        finally:
            self._lock.release(force=True)
        self._remove_made_folders()

    # ------------------------------------------------------------------ the parts
    def _take(self) -> None:
        """Take the lock without waiting; refuse when another process holds it."""
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            raise FolderLockedError(self._refusal()) from None

    def _refusal(self) -> str:
        """The message refusing a second writer: the folder, the holder, the fix."""
        holder = read_holder(self.folder)
        if holder is None:
            who = "no details recorded yet"
        else:
            where = "" if holder["host"] == socket.gethostname() else f" on {holder['host']}"
            command = " ".join(str(holder["command"]).split())  # one line, whatever it was
            who = f"pid {holder['pid']}{where}, started {holder['started']}: {command}"
        other = f", or choose another {self.option}" if self.option else ""
        return f"{self.folder} is in use by another smt-rl process ({who}); wait for it{other}."

    def _write_holder(self) -> None:
        """Record this process as the holder (best effort: the lock works without it, and a
        folder that cannot take this small file fails at the run's first write with the cause)."""
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            atomic_write_json(self.folder / HOLDER_FILE, holder)
            self._wrote_holder = True
        except OSError:
            pass

    def _clean_up(self) -> None:
        """Remove the holder record; and the lock file too when this lock created the folder and
        nothing else was written there (then the folder goes, in :meth:`_remove_made_folders`).
        Best effort: a file left behind only costs a stale record, which nobody trusts."""
        try:
            if self._wrote_holder:
                (self.folder / HOLDER_FILE).unlink(missing_ok=True)
            if self._made and all(is_lock_file(p) for p in self.folder.iterdir()):
                # unlinked while held: a process that opened it meanwhile finds it unlinked
                # once it gets it, and does not count it as taken (filelock checks st_nlink)
                (self.folder / LOCK_FILE).unlink()
            else:
                self._made = []
        except OSError:
            self._made = []

    def _remove_made_folders(self) -> None:
        """Remove the folders :meth:`claim` created, innermost first, while they are empty."""
        for path in reversed(self._made):
            try:
                path.rmdir()
            except OSError:  # another process wrote there meanwhile: it stays
                return


def read_holder(folder: Path) -> dict[str, Any] | None:
    """The live holder recorded in ``folder`` (pid, host, command, started), or None when the
    record is missing, unreadable, or left by a process that has died."""
    try:
        holder = json.loads((folder / HOLDER_FILE).read_text())
        holder = {k: holder[k] for k in ("pid", "host", "command", "started")}
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if holder["host"] == socket.gethostname() and not _alive(holder["pid"]):
        return None  # a record the killed holder could not remove
    return holder


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host runs (on Linux a zombie, killed and not yet reaped,
    does not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if Path("/proc/self/stat").is_file():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False
    if os.name != "posix":
        return True  # no cheap check here: trust the record
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
