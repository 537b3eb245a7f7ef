"""Cache builds that several processes may start at once (lab machines, cluster file systems).

A build holds an exclusive `fcntl.flock` on a `.NAME.lock` file beside its target while it checks, builds and
publishes; a process that finds the lock taken waits, then finds the finished target and uses it. Folders are
built in a per-writer temporary folder (`.NAME.tmp-PID`) and renamed into place, so a reader never sees a
partial one; temporary folders left by a killed writer are removed by the next build of the same target (it
holds the lock, so no live process can still be writing them).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

_PID_TMP = re.compile(r"\.(\d+)\.tmp$")


@contextlib.contextmanager
def exclusive(target: str | Path) -> Iterator[None]:
    """Holds an exclusive lock on `target` (a `.NAME.lock` file beside it) for the block; waits while another
    process holds it. The kernel drops the lock when its holder dies, so a killed build never blocks the next."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.with_name(f".{target.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def temp_folder(target: Path) -> Path:
    """This process's temporary folder for building `target`."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def remove_temp_folders(target: Path) -> None:
    """Removes every temporary build folder of `target`; call only while holding `exclusive(target)`."""
    for path in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


def build_folder(folder: str | Path, done_file: str, build: Callable[[Path], None]) -> Path:
    """Returns `folder`, building it first unless it already holds `done_file` (written last by a build).

    Args:
        folder: the folder to publish.
        done_file: a file name inside the folder whose presence means "complete".
        build: writes the complete folder's content (`done_file` last) into the temporary folder it is given.

    Returns:
        `folder`: built by this process, or by another one that held the lock first.
    """
    folder = Path(folder)
    if (folder / done_file).is_file():
        return folder
    with exclusive(folder):
        if (folder / done_file).is_file():  # built by another process while this one waited
            return folder
        remove_temp_folders(folder)
        if folder.exists():  # an incomplete folder (no `done_file`): nobody else can be writing it
            shutil.rmtree(folder)
        tmp = temp_folder(folder)
        build(tmp)
        if not (tmp / done_file).is_file():
            raise RuntimeError(f"{folder}: the build wrote no {done_file}")
        os.replace(tmp, folder)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def remove_stale_pid_temps(folder: str | Path) -> list[Path]:
    """Removes `.NAME[.RANDOM].PID.tmp` files (an interrupted `meit.util.atomic` write, checkpoints included) in
    `folder` whose writer process is gone; another live process's temporary files are left alone.

    Returns:
        The files removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.tmp"):
        match = _PID_TMP.search(path.name)
        if match and not _alive(int(match.group(1))) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
