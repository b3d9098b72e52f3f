"""Atomic file writes: a reader (or a run killed mid-write) never sees half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` (tensors, numbers, strings, lists and dicts of them) atomically."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: str | os.PathLike, error: type[Exception], fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: no code runs. A truncated file, a foreign
    file or one holding code raises ``error`` naming ``path`` and ``fix``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"{path} cannot be read ({type(exc).__name__}: {exc}); {fix}") from exc
