"""One run folder's logs: ``metrics.jsonl`` (one JSON object per log step) and tensorboard.

``metrics.jsonl`` only grows by whole lines, so a run killed while writing can leave at most a
torn last line: every reader here drops it (:func:`read_lines`), and a resumed run cuts the log
back to what its resume state saw (:func:`truncate_log`, :func:`drop_log_lines`), so no kill
window duplicates or loses a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smt_rl.errors import RunFolderError
from smt_rl.faults import kill_point
from smt_rl.io import atomic_write_bytes


def read_lines(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The log lines of ``path`` (none when it does not exist). A torn last line (a run killed
    mid-write) is left out.

    Raises:
        RunFolderError: a line before the last is not a JSON object (the file was edited).
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    whole, tail = lines[:-1], lines[-1]  # tail: what follows the last newline ("" if none)
    parsed = []
    for number, line in enumerate(whole, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if number == len(whole) and not tail:  # the last line, torn inside its JSON
                break
            raise RunFolderError(
                f"{path} line {number} is not a JSON object; the log was edited or damaged: "
                "restore it, or delete the run folder to start the run over."
            )
        parsed.append(record)
    return parsed


def rewrite_lines(path: str | os.PathLike, keep: Callable[[int, dict[str, Any]], bool]) -> int:
    """Keep the lines ``(index, record)`` that ``keep`` accepts (atomically); returns how many
    lines were removed (a torn last line included)."""
    path = Path(path)
    if not path.is_file():
        return 0
    records = read_lines(path)
    kept = [r for i, r in enumerate(records) if keep(i, r)]
    original = path.read_bytes()
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if text.encode() != original:
        atomic_write_bytes(path, text.encode())
    return len(original.splitlines()) - len(kept)


def truncate_log(path: str | os.PathLike, lines: int) -> None:
    """Keep the first ``lines`` lines (the ones a resume state had seen written)."""
    rewrite_lines(path, lambda i, _: i < lines)


def drop_log_lines(path: str | os.PathLike, phase: str, after: int = 0) -> bool:
    """Remove ``phase``'s lines logged after step ``after``; True when there were some."""
    return (
        rewrite_lines(path, lambda _, r: r.get("phase") != phase or r.get("step", 0) <= after) > 0
    )


class RunLogger:
    """Appends metric lines to ``RUN_DIR/metrics.jsonl`` and scalars to tensorboard events.

    Args:
        run_dir: the run folder.
        tensorboard: also write tensorboard events under ``RUN_DIR/tb``.
        purge_step: a resumed run: tensorboard drops the events at and after this step that
            the killed run wrote after its last checkpoint.
    """

    def __init__(
        self, run_dir: str | os.PathLike, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        rewrite_lines(path, lambda _i, _r: True)  # a torn last line goes before appending
        #: lines in metrics.jsonl (what a resume state records, to cut the log back to it)
        self.lines = len(read_lines(path))
        self._file = open(path, "a", buffering=1)  # noqa: SIM115
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def log(
        self, step: int, metrics: dict[str, Any], phase: str = "smt", tb_step: int | None = None
    ) -> None:
        """Write one line ``{"phase", "step", **metrics}``; numbers also go to tensorboard (at
        ``tb_step`` when given, else ``step``)."""
        line = {"phase": phase, "step": int(step), **metrics}
        self._file.write(json.dumps(line) + "\n")
        self.lines += 1
        kill_point("log.line")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(
                        f"{phase}/{key}", value, step if tb_step is None else tb_step
                    )

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
