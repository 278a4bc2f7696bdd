"""Alembic environment.

The issuer runs migrations itself (``issuer migrate``, ``issuer serve``) and passes
an open connection in ``config.attributes["connection"]``. Run from the alembic
command line (``alembic -c alembic.ini revision --autogenerate``), it opens its
own engine from ``ISSUER_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from issuer.app import CONNECTORS  # noqa: F401 (their tables join Base.metadata)
from issuer.settings import Settings
from issuer.store.db import create_engine
from issuer.store.models import Base

#: The core's tables and every connector's (defined on the same MetaData).
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_own_engine() -> None:
    engine = create_engine(Settings.from_env().database_url)
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():  # pragma: no cover - SQL scripts for DBAs
    context.configure(url=Settings.from_env().database_url, target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # pragma: no cover - developer's alembic command line
    asyncio.run(_run_own_engine())
