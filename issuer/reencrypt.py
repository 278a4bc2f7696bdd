"""``issuer reencrypt``: rewrap every encrypted value the issuer stores under the
current master key.

The core's encrypted columns are listed once, in :data:`ENCRYPTED_COLUMNS`; a connector
lists its own (``Connector.encrypted_columns``) and the command rewraps both. A table
that stores a new kind of secret adds one :class:`EncryptedColumn`, nothing else.

- Idempotent: a value already under the current key (``Encryptor.is_current``) is
  left as it is; a second run rewraps nothing.
- Resumable: rows are read in primary-key order and committed in batches of
  ``batch_size``, each row rewritten only if it still holds the value read
  (compare-and-swap). A crash mid-run leaves every row under the current or the
  previous key -- both decrypt while ``ENCRYPTION_MASTER_KEY_PREVIOUS`` is set --
  and a re-run finishes the rest.
- A value that does not decrypt (altered, or under a key this issuer no longer has)
  is counted and named in the report, never overwritten; the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer import audit
from issuer.audit import AuditEvent
from issuer.clock import Clock
from issuer.crypto import DecryptionError, Encryptor
from issuer.keys.ring import associated_data as signing_key_associated_data
from issuer.secrets import secret_context
from issuer.store import envelopes
from issuer.store.models import Client, SigningKeyRow

BATCH_SIZE = 100


@dataclass(frozen=True)
class EncryptedColumn:
    """One column of AES-GCM envelopes, bound to their row by ``associated_data(row)``:
    ``row`` maps the primary key and the ``context`` columns to their values."""

    table: Table
    key: str  # the primary-key column (single-column keys)
    column: str
    associated_data: Callable[[Mapping[str, Any]], bytes]
    context: tuple[str, ...] = ()  # further columns the associated data is made of

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"


ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn(SigningKeyRow.__table__, "kid", "private_jwk_encrypted",
                    lambda row: signing_key_associated_data(row["kid"])),
    # Client secrets kept readable for client_secret_jwt (issuer/secrets.py).
    EncryptedColumn(Client.__table__, "id", "secret_encrypted",
                    lambda row: secret_context(str(row["id"]))),
    EncryptedColumn(Client.__table__, "id", "previous_secret_encrypted",
                    lambda row: secret_context(str(row["id"]))),
)


@dataclass
class ColumnReport:
    rewrapped: int = 0
    current: int = 0  # already under the current key
    failed: list[str] = field(default_factory=list)  # primary keys that did not decrypt


async def reencrypt(engine: AsyncEngine, encryptor: Encryptor, clock: Clock, *,
                    columns: Sequence[EncryptedColumn] = ENCRYPTED_COLUMNS,
                    batch_size: int = BATCH_SIZE, actor: str | None = "cli"
                    ) -> dict[str, ColumnReport]:
    report = {spec.name: await _column(engine, encryptor, spec, batch_size)
              for spec in columns}
    async with engine.begin() as connection:
        await audit.record(connection, AuditEvent.SECRETS_REENCRYPTED, at=clock.now(),
                           actor=actor, details={"columns": [
                               {"column": name, "rewrapped": item.rewrapped,
                                "current": item.current, "failed": len(item.failed)}
                               for name, item in report.items()]})
    return report


async def _column(engine: AsyncEngine, encryptor: Encryptor, spec: EncryptedColumn,
                  batch_size: int) -> ColumnReport:
    report = ColumnReport()
    column = envelopes.Column(spec.table, spec.key, spec.column, spec.context)
    after: Any = None
    while True:
        async with engine.begin() as connection:
            rows = await envelopes.batch(connection, column, after, batch_size)
            for row in rows:
                primary_key, envelope = row[spec.key], row[spec.column]
                if encryptor.is_current(envelope):
                    report.current += 1
                    continue
                context = spec.associated_data(row)
                try:
                    rewrapped = encryptor.encrypt(encryptor.decrypt(envelope, context), context)
                except DecryptionError:
                    report.failed.append(str(primary_key))
                    continue
                if await envelopes.swap(connection, column, primary_key, envelope, rewrapped):
                    report.rewrapped += 1
                else:  # changed meanwhile, by a writer that used the current key
                    report.current += 1
        if len(rows) < batch_size:
            return report
        after = rows[-1][spec.key]
