"""The group writers' turn at a SQLite file, handed over by the kernel.

Every worker process of ``issuer serve`` has a group writer of its own, and all of
them commit to the one SQLite file, whose write lock admits one transaction at a
time. SQLite's busy handler waits for that lock by sleeping and retrying (1, 2, 5,
10, ... up to 100 ms between tries), so a writer that finds the lock taken wakes
up to tens of milliseconds after it was freed, with its whole batch of token
requests waiting. Before ``BEGIN IMMEDIATE`` each writer takes an exclusive
``flock`` on a file beside the database (``<database>-writer.lock``) and keeps it
until its ``COMMIT`` or ``ROLLBACK``: a writer waiting for its turn sleeps in the
kernel and is woken as soon as the other one is done.

The lock only orders the group writers; SQLite's own locking is unchanged and
still guards every connection (the engine's, the CLI's, the checkpoints), with
``busy_timeout`` as before. A writer holds the ``flock`` for one transaction,
itself bounded by that timeout, and a process that dies releases it. Without
``fcntl`` (Windows) there is nothing to take and SQLite's busy handler alone
orders the writers.
"""

from __future__ import annotations

import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Appended to the database file's path to name the lock file.
SUFFIX = "-writer.lock"


class WriteLock:
    """An exclusive ``flock`` on ``<database>-writer.lock``.

    Used by one thread at a time (the group writer's); opens the file on first use."""

    def __init__(self, database: str) -> None:
        self.path = database + SUFFIX
        self._fd: int | None = None

    def acquire(self) -> None:
        """Wait for the turn (raises ``OSError`` when the file cannot be opened)."""
        if fcntl is None:  # pragma: no cover - Windows
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
