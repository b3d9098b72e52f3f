"""Atomic file writes: a reader (or a run killed mid-write) never sees half a file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smt_rl.faults import kill_point


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    An OS error (a full disk, no permission...) leaves no temporary file and names ``path``.
    """
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            kill_point("write.before_rename")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise an OS error as the same kind naming ``path``: a failed write or fsync names no
    file, a failed temporary file names one the user never asked for."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


# what atomic_write_bytes names its temporary file: ".NAME." + 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_temp_files(
    folder: str | os.PathLike, skip: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Remove the temporary files that writes killed before their rename left in ``folder`` and
    its subfolders (but not in a subfolder for which ``skip`` is true); returns them. Only for a
    folder this process holds (another writer's file in flight would go too)."""
    stale: list[Path] = []
    for parent, folders, files in os.walk(folder):
        base = Path(parent)
        folders[:] = [f for f in folders if skip is None or not skip(base / f)]
        stale += [base / name for name in files if _TEMP_NAME.match(name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def read_format_json(
    path: Path, format_name: str, error: type[Exception], what: str, fix: str
) -> dict[str, Any]:
    """Read a JSON description whose ``"format"`` field must be ``format_name``.

    Raises ``error`` saying ``path`` is corrupt (then ``fix``) or is not a smt_rl ``what``.
    """
    try:
        document = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is corrupt ({exc}); {fix}") from exc
    if not isinstance(document, dict) or document.get("format") != format_name:
        raise error(f"{path} is not a smt_rl {what}.")
    return document


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())
