"""One run folder's logs: ``metrics.jsonl`` (one JSON object per log step) and tensorboard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
        #: lines in metrics.jsonl (what a resume state records, to cut the log back to it)
        self.lines = len(path.read_text().splitlines()) if path.is_file() else 0
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
