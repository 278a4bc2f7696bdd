"""Alembic: empty -> head on SQLite and PostgreSQL, and the models match the schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from issuer.store.db import create_engine
from issuer.store.migrate import current_revision, head_revision, upgrade
from issuer.store.models import Base
from tests.conftest import BACKENDS

TABLES = {"tenants", "clients", "issued_tokens", "audit_events", "signing_keys",
          "erp_connection", "erp_export",
          "used_assertion_jtis",
          "netsuite_connectors", "encrypted_keys", "change_stamp", "alembic_version"}


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    fresh: Callable[[], str] = request.getfixturevalue("fresh_postgres")
    return fresh()


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
