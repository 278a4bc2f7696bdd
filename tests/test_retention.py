"""Retention pruning (issuer.retention) in bounded batches, on SQLite and PostgreSQL:
exactly the rows past retention go, however the batches fall (rows that share a
time across a batch boundary included); the pass pauses between batches; rows
inserted meanwhile stay; two passes at once delete each row once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.clock import utc
from issuer.retention import BATCH, PAUSE, SQLITE_BATCH, TOKEN_RECORD_GRACE, prune
from issuer.store.db import create_engine
from issuer.store.models import AuditEventRow, IssuedToken
from tests.conftest import FakeClock

DAY = 86400
RETENTION_DAYS = 30


def _token(jti: str, expires_at: float) -> dict[str, Any]:
    return {"jti": jti, "client_id": "m2m_client", "tenant_id": "tenant", "scope": "a",
            "audience": ["https://api.example.com"], "kid": "kid",
            "issued_at": utc(expires_at - 3600), "expires_at": utc(expires_at),
            "revoked_at": None}


def _event(at: float, number: int) -> dict[str, Any]:
    return {"at": utc(at), "event": "M2M_TOKEN_GENERATED", "severity": "medium",
            "actor": "m2m_client", "tenant_id": "tenant", "client_id": "m2m_client",
            "source": None, "request_id": None, "details": {"n": number}}


async def _insert(engine: AsyncEngine, tokens: list[dict[str, Any]],
                  events: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        if tokens:
            await connection.execute(insert(IssuedToken), tokens)
        if events:
            await connection.execute(insert(AuditEventRow), events)


async def _left(engine: AsyncEngine) -> tuple[set[str], set[int]]:
    """The jtis and event numbers still stored."""
    async with engine.connect() as connection:
        jtis = set((await connection.execute(select(IssuedToken.jti))).scalars())
        details = (await connection.execute(select(AuditEventRow.details))).scalars()
        return jtis, {row["n"] for row in details if "n" in row}


async def _seed(engine: AsyncEngine, clock: FakeClock) -> tuple[set[str], set[int]]:
    """Expired and kept rows of both tables, several sharing a time on each side of
    the cut-offs; returns the jtis and event numbers that must stay."""
    now = clock.now()
    token_cut = now - TOKEN_RECORD_GRACE
    event_cut = now - RETENTION_DAYS * DAY
    # Expiry times: 4 rows at one second, 3 at the cut-off itself (expired), then
    # kept ones a second after the cut-off and later.
    token_times = ([token_cut - 500] * 4 + [token_cut - 400 + n for n in range(9)]
                   + [token_cut] * 3 + [token_cut + 1] * 2 + [now + 3600] * 3)
    tokens = [_token(f"jti-{n}", when) for n, when in enumerate(token_times)]
    event_times = ([event_cut - 9 * DAY] * 5 + [event_cut - DAY + n for n in range(7)]
                   + [event_cut] * 2 + [event_cut + 1] * 2 + [now] * 4)
    events = [_event(when, n) for n, when in enumerate(event_times)]
    await _insert(engine, tokens, events)
    kept_tokens = {row["jti"] for row in tokens if row["expires_at"] > utc(token_cut)}
    kept_events = {row["details"]["n"] for row in events if row["at"] > utc(event_cut)}
    return kept_tokens, kept_events


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 7, 100])
async def test_a_pass_removes_exactly_the_rows_past_retention_whatever_the_batch_size(
        engine, clock, batch):
    kept_tokens, kept_events = await _seed(engine, clock)
    before_tokens, before_events = await _left(engine)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    pruned = await prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=batch,
                         pause=0.25, sleep=pause)

    assert await _left(engine) == (kept_tokens, kept_events)
    assert pruned.tokens == len(before_tokens) - len(kept_tokens) == 16
    assert pruned.audit_events == len(before_events) - len(kept_events) == 14
    # A pause before every batch but the first. Rows sharing the last row's time go
    # in its batch, so there are at most rows // batch + 1 batches per table.
    assert set(pauses) == {0.25}
    assert len(pauses) <= 16 // batch + 14 // batch + 1


async def test_a_second_pass_finds_nothing_left(engine, clock):
    await _seed(engine, clock)
    await prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=3, sleep=_no_wait)
    again = await prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=3,
                        sleep=_no_wait)
    assert (again.tokens, again.audit_events) == (0, 0)


async def test_batches_are_bounded_and_the_pass_pauses_between_them(engine, clock):
    """Twelve expired token records in batches of four: three batches of four, each
    in its own transaction, a pause after each (the next one, or the events' first)."""
    now = clock.now()
    await _insert(engine, [_token(f"t{n}", now - TOKEN_RECORD_GRACE - 100 + n)
                           for n in range(12)], [])
    sizes: list[int] = []

    async def between_batches(seconds: float) -> None:
        assert seconds == PAUSE
        tokens, _ = await _left(engine)
        sizes.append(12 - len(tokens) - sum(sizes))

    pruned = await prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=4,
                         sleep=between_batches)
    assert pruned.tokens == 12
    # Pauses after batches of 4, 4 and 4, and after the one that found none left;
    # then the audit events' one batch.
    assert sizes == [4, 4, 4, 0]


async def test_batches_are_smaller_on_sqlite_whose_one_writer_the_token_endpoint_waits_for(
        engine, clock):
    rows = SQLITE_BATCH + 1
    now = clock.now()
    await _insert(engine, [_token(f"t{n}", now - TOKEN_RECORD_GRACE - rows + n)
                           for n in range(rows)], [])
    sizes: list[int] = []

    async def between_batches(seconds: float) -> None:
        tokens, _ = await _left(engine)
        sizes.append(rows - len(tokens) - sum(sizes))

    await prune(engine, clock, audit_retention_days=RETENTION_DAYS, sleep=between_batches)
    if engine.dialect.name == "sqlite":
        assert sizes == [SQLITE_BATCH, 1]
    else:
        assert SQLITE_BATCH < rows <= BATCH
        assert sizes == [rows]


async def test_rows_inserted_during_a_pass_stay_and_the_pass_still_ends(engine, clock):
    """Token traffic goes on while a pass runs: between every two batches new token
    records and events arrive (new ones, and ones already past retention, as a
    clock-skewed writer could make); the new ones stay, the pass ends."""
    kept_tokens, kept_events = await _seed(engine, clock)
    now = clock.now()
    arrivals = 0

    async def traffic(seconds: float) -> None:
        nonlocal arrivals
        arrivals += 1
        await _insert(engine, [_token(f"new-{arrivals}", now + 3600)],
                      [_event(now, 1000 + arrivals)])

    await prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=2, sleep=traffic)

    tokens, events = await _left(engine)
    assert arrivals >= 5
    assert tokens == kept_tokens | {f"new-{n}" for n in range(1, arrivals + 1)}
    assert events == kept_events | {1000 + n for n in range(1, arrivals + 1)}


async def test_two_passes_at_once_delete_every_expired_row_once(engine, clock, settings):
    """Every worker process runs the task: two passes on two engines at the same
    time remove exactly the expired rows and count each once between them."""
    now = clock.now()
    expired = [_token(f"old-{n}", now - TOKEN_RECORD_GRACE - 1000 + n // 3)
               for n in range(60)]
    fresh = [_token(f"fresh-{n}", now + 60) for n in range(5)]
    old_events = [_event(now - (RETENTION_DAYS + 1) * DAY + n, n) for n in range(40)]
    await _insert(engine, expired + fresh, [*old_events, _event(now, 999)])
    other = create_engine(settings.database_url)
    try:
        first, second = await asyncio.gather(
            prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=7, sleep=_no_wait),
            prune(other, clock, audit_retention_days=RETENTION_DAYS, batch=7, sleep=_no_wait))
    finally:
        await other.dispose()
    tokens, events = await _left(engine)
    assert tokens == {row["jti"] for row in fresh}
    assert events == {999}
    assert first.tokens + second.tokens == 60
    assert first.audit_events + second.audit_events == 40


async def test_a_batch_size_below_one_is_refused(engine, clock):
    with pytest.raises(ValueError, match="batch"):
        await prune(engine, clock, audit_retention_days=RETENTION_DAYS, batch=0)


async def test_nothing_to_prune_deletes_nothing_and_never_pauses(engine, clock):
    now = clock.now()
    await _insert(engine, [_token("live", now + 60)], [_event(now, 1)])
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    pruned = await prune(engine, clock, audit_retention_days=RETENTION_DAYS, sleep=pause)
    assert (pruned.tokens, pruned.audit_events) == (0, 0)
    assert await _left(engine) == ({"live"}, {1})
    assert pauses == [PAUSE]  # between the tokens' one batch and the events' one


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)

