"""The one way MEIT writes a file: a temporary file in the same folder, fsynced, then renamed over the target.

A reader never sees a half-written or 0-byte file (a full disk or a kill leaves the old file, or none), and the
file gets the permissions the user's umask gives any new file (`mkstemp` alone would make it 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Opens a temporary file next to `path`; on a clean exit it is fsynced and renamed to `path`.

    Args:
        path: the file to (re)place.
        mode: "w" (text) or "wb" (bytes).
        encoding: text encoding (ignored for "wb").

    Yields:
        The open temporary file. If the block raises, the temporary file is removed and `path` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # `.NAME.RANDOM.PID.tmp`: the writer's PID lets `meit.util.locks.remove_stale_pid_temps` clean up after a kill.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Writes `text` to `path` atomically."""
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_json(path: str | Path, payload: Any, indent: int | None = 2) -> None:
    """Writes `payload` as JSON (UTF-8, a final newline) to `path` atomically."""
    write_text(path, json.dumps(payload, indent=indent, ensure_ascii=False, default=str) + "\n")
