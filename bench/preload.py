"""Seed a PostgreSQL store with many token records and audit events, fast.

Not a test. The benchmarks use it to measure the token endpoint on a store the
size of a busy production one (``token_endpoint.py --preload-rows``) and to time
retention pruning (``retention_prune.py``). One ``INSERT ... SELECT`` over
``generate_series`` per table, on a migrated, empty store: the table's indexes
(primary key included) are dropped first and built again after (building an
index once is several times faster than growing it row by row), then
``VACUUM ANALYZE``, as autovacuum would leave a long-lived table.

The rows have the shapes the token endpoint writes (``issuer.oauth.endpoints.
granted_rows``): a 22-character ``jti``, ``m2m_`` client ids, UUID tenant ids,
RFC 7638 ``kid``s, a JSON audience, ``M2M_TOKEN_GENERATED`` events with their
details (one row in twenty is an ``M2M_TOKEN_DENIED`` event instead). They are
spread over ``tenants`` tenants of ``clients_per_tenant`` clients each (no rows
in ``tenants``/``clients``: nothing joins them on the token path), in time order
(audit ids grow with ``at``, as they do when the issuer writes them):

- ``issued_tokens``: issued over the window a record lives, TTL plus the day of
  grace (``issuer.retention.TOKEN_RECORD_GRACE``), ending ``now``; the oldest
  ``margin`` seconds of it are left out, so no row becomes prunable during a
  run shorter than that;
- ``audit_events``: over the audit retention window (``audit_retention_days``)
  ending ``now``, the same margin left out;
- ``expired_share`` of each table lies before the pruning cut-off instead
  (evenly over a span of the window times the share): what one pruning pass
  finds after pruning was off, or far behind.

Run by itself: ``.venv/bin/python bench/preload.py --postgres URL --rows 1000000``
(a migrated database; what it holds already stays).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

#: What a record outlives its token by (``issuer.retention.TOKEN_RECORD_GRACE``).
TOKEN_RECORD_GRACE = 86400
#: The issuer's defaults (``ISSUER_TOKEN_TTL``, ``ISSUER_AUDIT_RETENTION_DAYS``).
TOKEN_TTL = 3600
AUDIT_RETENTION_DAYS = 365
TABLES = ("issued_tokens", "audit_events")

# ``$1`` rows, ``$2`` now (timestamptz), ``$3`` the oldest kept time, ``$4`` the
# expired rows' span in seconds, ``$5`` the expired share, ``$6`` the number of
# clients, ``$7`` the token TTL, ``$8`` the newest expired time. ``i`` runs
# 0..rows-1 in time order: the first ``rows * share`` rows before the window
# (prunable), the others in it. Client columns come from ``pg_temp.preload_clients``.
_SERIES = """
WITH series AS (
    SELECT i,
           (i % $6::int) AS c,
           date_trunc('second', CASE WHEN i < floor($1::bigint * $5::float8)
                THEN $8::timestamptz - make_interval(
                     secs => $4::float8 * (1 - i / greatest(floor($1::bigint * $5::float8), 1)))
                ELSE $3::timestamptz + ($2::timestamptz - $3::timestamptz)
                     * ((i - floor($1::bigint * $5::float8))
                        / greatest($1::bigint - floor($1::bigint * $5::float8), 1))
           END) AS t
    FROM generate_series(0, $1::bigint - 1) AS i
), shaped AS (
    SELECT i, t, client_id, tenant_id, scope, audience, details_head,
           (ARRAY[kid1, kid2, kid3])[1 + i % 3] AS kid,
           pg_temp._b64url(md5(seed || i), 22) AS jti
    -- A nested loop over the series: the rows keep their time order.
    FROM series CROSS JOIN LATERAL (
        SELECT * FROM pg_temp.preload_clients AS p WHERE p.c = series.c) AS client
)
"""

_FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp._b64url(hex text, length int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT substr(translate(encode(decode(hex, 'hex'), 'base64'), '+/=' || chr(10), '-_'),
                  1, length)
$$
"""

# ``$1`` clients, ``$2`` tenants, ``$3`` a seed: each client's constant columns
# (and the three signing keys of the period, as RFC 7638 thumbprints).
_CLIENTS = """
CREATE TEMP TABLE preload_clients AS
SELECT *,
       '{"client_id": ' || to_json(client_id) || ', "tenant_id": ' || to_json(tenant_id)
       || ', "scopes": ' || to_json(string_to_array(scope, ' '))
       || ', "audience": ' || json_build_array(audience) || ', "jti": "' AS details_head
FROM (
SELECT c,
       'm2m_' || pg_temp._b64url(md5($3 || 'client' || c), 22) AS client_id,
       md5($3 || 'tenant' || (c % $2::int))::uuid::text AS tenant_id,
       (ARRAY['orders:read', 'orders:read orders:write', 'invoices:read',
              'inventory:read inventory:write'])[1 + c % 4] AS scope,
       'https://api' || (c % 3) || '.example.com' AS audience,
       pg_temp._b64url(md5($3 || 'kid1') || md5($3 || 'kid1b'), 43) AS kid1,
       pg_temp._b64url(md5($3 || 'kid2') || md5($3 || 'kid2b'), 43) AS kid2,
       pg_temp._b64url(md5($3 || 'kid3') || md5($3 || 'kid3b'), 43) AS kid3,
       $3 || 'jti' AS seed
FROM generate_series(0, $1::int - 1) AS c
) AS base
"""

_TOKENS = _SERIES + """
INSERT INTO issued_tokens (jti, client_id, tenant_id, scope, audience, kid, issued_at,
                           expires_at, revoked_at)
SELECT jti, client_id, tenant_id, scope, json_build_array(audience), kid, t,
       t + make_interval(secs => $7::int),
       CASE WHEN i % 1000 = 0 THEN t + interval '60 seconds' END
FROM shaped
"""

_EVENTS = _SERIES + """
INSERT INTO audit_events (at, event, severity, actor, tenant_id, client_id, source,
                          request_id, details)
SELECT t,
       CASE WHEN i % 20 = 19 THEN 'M2M_TOKEN_DENIED' ELSE 'M2M_TOKEN_GENERATED' END,
       'medium', client_id, tenant_id, client_id,
       '10.' || (i % 200) || '.' || (i % 251) || '.' || (i % 241),
       substr(md5('request' || i), 1, 16),
       CASE WHEN i % 20 = 19
            THEN ('{"error": "invalid_client", "reason": "wrong_secret", "client_id": "'
                  || client_id || '"}')::json
            ELSE (details_head || jti || '", "kid": "' || kid || '", "expiresAt": "'
                  || replace(((t + make_interval(secs => $7::int)) AT TIME ZONE 'UTC')
                             ::text, ' ', 'T')
                  || '+00:00", "secret_used": "current"}')::json
       END
FROM shaped
"""


@dataclass(frozen=True)
class Preloaded:
    rows: int
    expired_tokens: int
    expired_events: int
    seconds: float
    table_mb: dict[str, float]


async def preload(dsn: str, rows: int, *, now: datetime | None = None,
                  expired_share: float = 0.0, tenants: int = 200, clients_per_tenant: int = 5,
                  token_ttl: int = TOKEN_TTL, audit_retention_days: int = AUDIT_RETENTION_DAYS,
                  margin: float = 3600.0) -> Preloaded:
    """Insert ``rows`` rows into each of ``issued_tokens`` and ``audit_events`` of
    the migrated store at ``dsn`` (an asyncpg DSN)."""
    import asyncpg  # type: ignore[import-untyped]

    if not 0.0 <= expired_share < 1.0:
        raise ValueError("expired_share is a fraction below 1")
    now = now or datetime.now(UTC)
    start = time.perf_counter()
    connection = await asyncpg.connect(dsn, timeout=30)
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SET maintenance_work_mem = '512MB'")
        await connection.execute(_FUNCTIONS)
        await connection.execute(_CLIENTS, tenants * clients_per_tenant, tenants,
                                 secrets.token_hex(8))
        await connection.execute("ALTER TABLE pg_temp.preload_clients ADD PRIMARY KEY (c)")
        await connection.execute("ANALYZE pg_temp.preload_clients")
        windows = {
            "issued_tokens": (token_ttl + TOKEN_RECORD_GRACE - margin, _TOKENS),
            "audit_events": (audit_retention_days * 86400 - margin, _EVENTS),
        }
        for table, (window, insert) in windows.items():
            # Kept rows from ``margin`` after the pruning cut-off on; expired ones
            # end a second before it.
            cutoff = now.timestamp() - window - margin
            oldest_kept = datetime.fromtimestamp(cutoff + margin, UTC)
            newest_expired = datetime.fromtimestamp(cutoff - 1, UTC)
            async with connection.transaction():
                rebuild = await _drop_indexes(connection, table)
                await connection.execute(insert, rows, now, oldest_kept,
                                         window * expired_share, expired_share,
                                         tenants * clients_per_tenant, token_ttl,
                                         newest_expired)
                for statement in rebuild:
                    await connection.execute(statement)
            await connection.execute(f"VACUUM (ANALYZE) {table}")
        expired_tokens = await connection.fetchval(
            "SELECT count(*) FROM issued_tokens WHERE expires_at <= $1",
            datetime.fromtimestamp(now.timestamp() - TOKEN_RECORD_GRACE, UTC))
        expired_events = await connection.fetchval(
            "SELECT count(*) FROM audit_events WHERE at <= $1",
            datetime.fromtimestamp(now.timestamp() - audit_retention_days * 86400, UTC))
        sizes = {table: await connection.fetchval(
            "SELECT pg_total_relation_size($1::regclass)", table) / 2**20 for table in TABLES}
    finally:
        await connection.close()
    return Preloaded(rows=rows, expired_tokens=expired_tokens, expired_events=expired_events,
                     seconds=time.perf_counter() - start, table_mb=sizes)


async def _drop_indexes(connection: object, table: str) -> list[str]:
    """Drop ``table``'s primary key and indexes; return the statements that make
    them again, exactly as the migrations made them (names and definitions read
    from the catalog)."""
    constraints = await connection.fetch(  # type: ignore[attr-defined]
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype = 'p'", table)
    indexes = await connection.fetch(  # type: ignore[attr-defined]
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = $1 AND indexname NOT IN (SELECT conname FROM pg_constraint "
        "WHERE conrelid = $1::regclass)", table)
    for row in constraints:
        await connection.execute(  # type: ignore[attr-defined]
            f'ALTER TABLE {table} DROP CONSTRAINT "{row["conname"]}"')
    for row in indexes:
        await connection.execute(f'DROP INDEX "{row["indexname"]}"')  # type: ignore[attr-defined]
    return ([f'ALTER TABLE {table} ADD CONSTRAINT "{row["conname"]}" {row["definition"]}'
             for row in constraints] + [row["indexdef"] for row in indexes])


def describe(result: Preloaded) -> str:
    """One ``key=value`` line."""
    sizes = " ".join(f"{table}_mb={size:.0f}" for table, size in result.table_mb.items())
    return (f"preload rows={result.rows} expired_tokens={result.expired_tokens} "
            f"expired_events={result.expired_events} seconds={result.seconds:.1f} {sizes}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, metavar="URL",
                        help="the migrated store, e.g. postgresql://postgres@127.0.0.1/issuer")
    parser.add_argument("--rows", type=int, required=True, help="rows per table")
    parser.add_argument("--expired-share", type=float, default=0.0,
                        help="fraction of each table older than retention keeps (default 0)")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--clients-per-tenant", type=int, default=5)
    args = parser.parse_args(argv)
    dsn = "postgresql://" + args.postgres.split("://", 1)[1]
    result = asyncio.run(preload(dsn, args.rows, expired_share=args.expired_share,
                                 tenants=args.tenants,
                                 clients_per_tenant=args.clients_per_tenant))
    print(describe(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
