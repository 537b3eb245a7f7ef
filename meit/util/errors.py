"""Errors a user can act on: the message names the file or setting and the problem.

Command-line entry points catch `UserFacingError` (and the older `ValueError`/`FileNotFoundError` subclasses that
carry a path, such as `meit.data.records.RecordError`), print `error: MESSAGE` on stderr and exit with status 2,
without a traceback. Code raises a subclass below, or its own subclass, never a bare `Exception`.
"""

from __future__ import annotations

from pathlib import Path


class UserFacingError(Exception):
    """A problem with a file, folder or setting the user gave; `str()` is "{where}: {problem}".

    Args:
        where: the offending file, folder or setting (e.g. a path, or `--data.split`).
        problem: what is wrong and, where there is one, what to do about it.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = str(where)
        self.problem = problem


class RunFileError(UserFacingError):
    """A run directory's file that is missing, empty, corrupt, or not to be trusted."""


class UntrustedCodeError(UserFacingError):
    """Loading would run code from a model folder or hub id that the command line did not allow."""
