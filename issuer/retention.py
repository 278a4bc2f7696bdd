"""Retention: the background task that prunes what no one needs any more (DESIGN §7).

- ``issued_tokens`` rows a day after their token expired (an expired token is
  inactive anyway; the day keeps yesterday's tokens listable by the admin API);
- ``audit_events`` older than ``ISSUER_AUDIT_RETENTION_DAYS`` (default 365).

Deletes go in batches of :data:`BATCH` rows, each its own short transaction, so
pruning a large backlog never holds a long lock on a table the token endpoint
writes to. Several processes may prune at once: a row is deleted once, and the
others find nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.clock import Clock, utc
from issuer.store import purge
from issuer.store.models import AuditEventRow, IssuedToken

log = logging.getLogger(__name__)

BATCH = 5000
#: Seconds between two pruning passes.
PRUNE_EVERY = 600.0
#: How long a token record outlives its token.
TOKEN_RECORD_GRACE = 86400


@dataclass(frozen=True)
class Pruned:
    tokens: int
    audit_events: int


async def prune(engine: AsyncEngine, clock: Clock, *, audit_retention_days: int) -> Pruned:
    """One pruning pass; returns how many rows went."""
    now = clock.now()
    tokens = await purge.delete_batches(engine, IssuedToken.jti, IssuedToken.expires_at,
                                        utc(now - TOKEN_RECORD_GRACE), BATCH)
    events = await purge.delete_batches(engine, AuditEventRow.id, AuditEventRow.at,
                                        utc(now - audit_retention_days * 86400), BATCH)
    if tokens or events:
        log.info("pruned %d expired token records and %d audit events", tokens, events)
    return Pruned(tokens=tokens, audit_events=events)
