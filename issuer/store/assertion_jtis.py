"""The client-assertion replay store (RFC 7523 §3), the ``used_assertion_jtis`` table.

RFC 7523 §3: "The authorization server MAY ensure that JWTs are not replayed by
maintaining the set of used 'jti' values for the length of time for which the JWT
would be considered valid based on the applicable 'exp' instant." We do: a ``jti`` is
spent by one ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so of two requests
carrying the same assertion -- in one process or in two -- exactly one inserts the row
and passes; the other finds it and is refused. Rows are kept until the assertion's
``exp`` plus the clock-skew leeway (after that the assertion is refused as expired
anyway), then pruned by a background task.
"""

from __future__ import annotations

import logging

from sqlalchemy import Executable, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.clock import Clock, utc
from issuer.store.bounds import bounded
from issuer.store.models import UsedAssertionJti

log = logging.getLogger(__name__)

#: Seconds between two prunes of expired rows.
PRUNE_INTERVAL = 300.0
_TABLE: Table = UsedAssertionJti.__table__


class ReplayStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def use(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Spend ``jti`` for ``client_id`` until ``expires_at``; False when it was spent."""
        statement = (self._insert(_TABLE)
                     .values(client_id=client_id, jti=jti, expires_at=utc(expires_at))
                     .on_conflict_do_nothing(index_elements=["client_id", "jti"])
                     .returning(_TABLE.c.jti))
        return await bounded(self._insert_new(statement))  # within the request's budget

    async def _insert_new(self, statement: Executable) -> bool:
        async with self._engine.begin() as connection:
            inserted = (await connection.execute(statement)).first()
        return inserted is not None

    async def prune(self) -> int:
        """Delete the rows whose assertion expired; how many."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(_TABLE).where(_TABLE.c.expires_at < utc(self._clock.now())))
        count: int = result.rowcount
        return count
