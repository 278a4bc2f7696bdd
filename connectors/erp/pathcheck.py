"""Which filesystem-mode dropzone connections need the operator after the move to
org folders (``issuer erp check-dropzone-paths``; also printed by ``issuer migrate``).

A filesystem connection's ``export_path`` (and ``ack_path``) once resolved inside
``ISSUER_ERP_DROPZONE_ROOT`` itself; it now resolves inside the org's folder,
``<root>/<org_id>/`` (:mod:`connectors.erp.orgfolder`). For every such path this
says where it used to lead (``old_path``), where it leads now (``new_path``) and
whether anything is to be done:

- ``ok``: the new folder exists (reached without a link);
- ``move``: it does not, but the old one does: move that folder (or the ERP's
  configuration) to the new place;
- ``missing``: neither exists: create the new folder, or change the path;
- ``link``: a link or a file lies on the way to the new folder (links are never
  followed): replace it with the folder, or a bind mount;
- ``refused``: the path is not allowed any more (``..``, percent-encoding, ...):
  change it (PATCH the connection);
- ``error``: the folder could not be checked (the reason says why);
- ``blocked``: the stored config does not decrypt (see ``issuer reencrypt``).

Nothing is changed, moved or audited; the report shows paths, never a credential.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from connectors.erp import orgfolder, store
from connectors.erp.registry import DROPZONE_JSON_V1
from connectors.erp.tables import ErpConnectionRow
from issuer.crypto import DecryptionError, Encryptor

OK = "ok"
FIELDS = ("export_path", "ack_path")


@dataclass(frozen=True)
class PathCheck:
    connection_id: str
    org_id: str
    status: str
    field: str | None  # None for a config that does not decrypt
    configured: str | None
    state: str
    old_path: str | None
    new_path: str | None
    detail: str | None = None

    def line(self) -> str:
        head = f"{self.connection_id} (org {self.org_id}, {self.status})"
        if self.field is None:
            return f"{head}: {self.state}: {self.detail}"
        text = f"{head} {self.field} {self.configured!r}: {self.state}"
        if self.state == "move":
            return f"{text}: {self.old_path} to {self.new_path}"
        if self.state in ("missing", OK):
            return f"{text}: {self.new_path}"
        return f"{text}: {self.detail}"


async def filesystem_connections(engine: AsyncEngine) -> list[store.ConnectionRecord]:
    """Every DROPZONE_JSON_V1 connection, active or not, oldest first (their mode is
    inside the encrypted config)."""
    async with AsyncSession(engine) as session:
        rows = (await session.execute(
            select(ErpConnectionRow).where(ErpConnectionRow.connector_type == DROPZONE_JSON_V1)
            .order_by(ErpConnectionRow.created_at, ErpConnectionRow.id))).scalars().all()
        return [store.connection_record(row) for row in rows]


async def check(engine: AsyncEngine, encryptor: Encryptor, root: Path) -> list[PathCheck]:
    """One :class:`PathCheck` per path of every filesystem-mode connection."""
    checks: list[PathCheck | tuple[store.ConnectionRecord, str, str]] = []
    for record in await filesystem_connections(engine):
        try:
            config: dict[str, Any] = json.loads(encryptor.decrypt(
                record.config_encrypted, store.associated_data(record.id)))
        except DecryptionError:
            checks.append(PathCheck(str(record.id), record.org_id, record.status, None, None,
                                    "blocked", None, None,
                                    "the stored config does not decrypt"))
            continue
        if config.get("mode") == "filesystem":
            checks.extend((record, field, config[field]) for field in FIELDS
                          if isinstance(config.get(field), str))
    return await asyncio.to_thread(_check_paths, checks, root)


def _check_paths(checks: list[PathCheck | tuple[store.ConnectionRecord, str, str]],
                 root: Path) -> list[PathCheck]:
    root = root.resolve()
    return [item if isinstance(item, PathCheck) else _check_path(*item, root)
            for item in checks]


def _check_path(record: store.ConnectionRecord, field: str, value: str, root: Path
                ) -> PathCheck:
    old = str((root / value.lstrip("/")).resolve())  # how it resolved before org folders

    def result(state: str, new: str | None, detail: str | None = None) -> PathCheck:
        return PathCheck(str(record.id), record.org_id, record.status, field, value, state,
                         old, new, detail)

    try:
        parts = orgfolder.components(value)
    except ValueError as error:
        return result("refused", None, str(error))
    new = str(root.joinpath(record.org_id, *parts))
    try:
        with orgfolder.open_folder(root, record.org_id, parts, create=False):
            return result(OK, new)
    except orgfolder.FolderRefused as refused:
        return result("link", new, str(refused))
    except FileNotFoundError:
        return result("move" if Path(old).is_dir() else "missing", new)
    except OSError as error:  # e.g. the issuer may not read a folder on the way
        return result("error", new, os.strerror(error.errno or 0))


def needs_action(checks: list[PathCheck]) -> list[PathCheck]:
    return [item for item in checks if item.state != OK]


def as_json(checks: list[PathCheck]) -> list[dict[str, Any]]:
    return [asdict(item) for item in checks]
