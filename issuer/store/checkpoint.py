"""WAL checkpoints of a SQLite store, on a thread of their own, off the commit path.

By default SQLite checkpoints on the connection that commits once the WAL has
grown past 1000 pages: the commit that crosses it copies the WAL into the
database file and fsyncs it before it returns. On the group writer's connection
that is a whole batch of token requests waiting for a checkpoint -- under load,
every few seconds, a stall of up to a second on a slow disk. The writer's
connection moves its automatic checkpoint far out (:data:`WRITER_AUTOCHECKPOINT`
pages, a safety net should this thread fail) and tells a :class:`Checkpointer`
after each commit; the checkpointer runs a ``PASSIVE``
checkpoint on its own connection and thread at most every ``interval`` seconds
while commits come in. A passive checkpoint never blocks the writer (WAL lets a
checkpoint and a writer run at once; it copies what no reader still needs).

Under steady load a passive checkpoint alone never lets the WAL start over:
SQLite rewinds the WAL only when a writer begins after every frame was copied,
and the group writers append new frames while a checkpoint copies the old ones.
The WAL then grows to :data:`WRITER_AUTOCHECKPOINT` pages, after which every
commit of the writer's connection runs a checkpoint of its own (and fsyncs the
database file) before it returns. So each checkpoint here is two passes: the
bulk beside the writers, then what they appended meanwhile while holding the
writers' turn (issuer.store.write_lock) -- a short pause -- after which the next
writer rewinds the WAL: it stays about ``interval`` seconds of writes long.

Durability does not change: a commit is durable when it returns (the WAL is
fsynced, ``synchronous=FULL``); the checkpoint only moves committed pages into
the database file, fsynced too. Connections of the engine keep SQLite's default
automatic checkpoint (they rarely write); a process without a group writer (the
CLI) checkpoints as SQLite always does.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from issuer.store.write_lock import WriteLock

log = logging.getLogger(__name__)

#: Seconds between two checkpoints while commits come in.
INTERVAL = 1.0
#: The writer connection's ``wal_autocheckpoint`` (pages of 4 KiB: 64 MiB).
WRITER_AUTOCHECKPOINT = 16384


class Checkpointer:
    def __init__(self, path: str, *, busy_timeout: float, interval: float = INTERVAL) -> None:
        self._path = path
        self._write_lock = WriteLock(path)  # a file description of its own: the writers wait
        self._busy_timeout = busy_timeout
        self._interval = interval
        self._committed = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.checkpoints = 0

    def start(self) -> None:
        self._thread.start()

    def committed(self) -> None:
        """A transaction was committed: the WAL has grown (any thread may call this)."""
        self._committed.set()

    def close(self) -> None:
        """Run a last checkpoint and stop the thread."""
        self._stopping.set()
        self._committed.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(self._path, isolation_level=None,
                                         check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout={round(self._busy_timeout * 1000)}")
            connection.execute("PRAGMA synchronous=FULL")
            while True:
                self._committed.wait()
                self._committed.clear()
                self._checkpoint(connection)
                if self._stopping.wait(self._interval):
                    self._checkpoint(connection)
                    return
        except sqlite3.Error:
            log.exception("the SQLite checkpoint thread stopped; the writer's connection "
                          "checkpoints past %d pages", WRITER_AUTOCHECKPOINT)
        finally:
            if connection is not None:
                connection.close()
            self._write_lock.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            try:
                self._write_lock.acquire()
            except OSError as error:
                log.debug("WAL checkpoint without the writers' turn: %s", error)
                return
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                self._write_lock.release()
        except sqlite3.OperationalError as error:  # e.g. locked by a schema change: next time
            log.debug("WAL checkpoint skipped: %s", error)
        finally:
            self.checkpoints += 1
