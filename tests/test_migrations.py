"""Alembic: empty -> head on SQLite and PostgreSQL, and the models match the schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from issuer.app import CONNECTORS
from issuer.store.db import create_engine
from issuer.store.migrate import current_revision, head_revision, upgrade
from issuer.store.models import Base
from tests.conftest import BACKENDS

TABLES = {"tenants", "clients", "issued_tokens", "audit_events", "signing_keys",
          "erp_connection", "erp_export",
          "used_assertion_jtis",
          "netsuite_connectors", "encrypted_keys", "change_stamp", "trusted_issuers",
          "alembic_version"}


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    fresh: Callable[[], str] = request.getfixturevalue("fresh_postgres")
    return fresh()


def test_every_connector_defines_its_tables_on_the_issuers_metadata():
    connector_tables = {table.name for connector in CONNECTORS for table in connector.tables}
    assert connector_tables == {"erp_connection", "erp_export", "netsuite_connectors",
                                "encrypted_keys"}
    assert connector_tables <= set(Base.metadata.tables)


async def test_upgrade_from_empty_to_head_then_models_match_schema(empty_database_url):
    engine = create_engine(empty_database_url)
    try:
        assert await current_revision(engine) is None
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await connection.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata))
        assert tables == TABLES
        assert diff == []
        await upgrade(engine)  # a second run is a no-op
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_one_active_signing_key_per_alg_is_enforced_by_the_database(empty_database_url):
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    from issuer.store.models import SigningKeyRow

    engine = create_engine(empty_database_url)
    try:
        await upgrade(engine)
        now = datetime.now(UTC)
        row = {"alg": "RS256", "state": "active", "public_jwk": {}, "created_at": now,
               "private_jwk_encrypted": b"x", "activated_at": now, "retired_at": None}
        async with engine.begin() as connection:
            await connection.execute(SigningKeyRow.__table__.insert(), [{**row, "kid": "a"}])
            await connection.execute(SigningKeyRow.__table__.insert(),
                                     [{**row, "kid": "b", "state": "retired"}])
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(SigningKeyRow.__table__.insert(), [{**row, "kid": "c"}])
    finally:
        await engine.dispose()


async def _tenants_at_0005(url: str, names: list[str]) -> None:
    """A store migrated to 0005 (before tenant name keys) holding tenants ``names``."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    engine = create_engine(url)
    try:
        await upgrade(engine, "0005")
        now = datetime.now(UTC).replace(tzinfo=None)
        async with engine.begin() as connection:
            for number, name in enumerate(names):
                await connection.execute(text(
                    "INSERT INTO tenants (id, name, status, platform, created_at, updated_at) "
                    "VALUES (:id, :name, 'active', false, :now, :now)"),
                    {"id": f"00000000-0000-0000-0000-{number:012d}", "name": name, "now": now})
    finally:
        await engine.dispose()


async def test_tenant_name_keys_are_backfilled_and_unique(empty_database_url):
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from issuer.store.models import Tenant

    await _tenants_at_0005(empty_database_url, ["Acme Corp", "Müller  GmbH"])
    engine = create_engine(empty_database_url)
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            keys = (await connection.execute(
                select(Tenant.name, Tenant.name_key).order_by(Tenant.name))).all()
        assert [tuple(row) for row in keys] == [("Acme Corp", "acme corp"),
                                                ("Müller  GmbH", "muller gmbh")]
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(Tenant.__table__.update()
                                         .where(Tenant.name == "Acme Corp")
                                         .values(name_key="muller gmbh"))
    finally:
        await engine.dispose()


async def test_existing_look_alike_tenant_names_stop_the_migration_with_their_names(
        empty_database_url):
    from sqlalchemy import inspect

    await _tenants_at_0005(empty_database_url, ["acme", "globex", "ACME"])
    engine = create_engine(empty_database_url)
    try:
        with pytest.raises(RuntimeError) as refused:
            await upgrade(engine)
        assert str(refused.value) == (
            "tenant names must differ by more than case, width, accents or spacing, but "
            "these are the same name: 'acme' (00000000-0000-0000-0000-000000000000), 'ACME' "
            "(00000000-0000-0000-0000-000000000002). Rename all but one of each (PATCH "
            "/api/v1/tenants/{id}) and run the migration again; nothing was changed.")
        assert await current_revision(engine) == "0005"
        async with engine.connect() as connection:
            columns = await connection.run_sync(
                lambda c: {column["name"] for column in inspect(c).get_columns("tenants")})
        assert "name_key" not in columns
    finally:
        await engine.dispose()
