"""DROPZONE_JSON_V1: the draft order as a JSON file in a directory the ERP polls.

``export`` writes ``<export_path>/<order-id>_<timestamp>.json``; with
``atomic_write`` (the default) it writes a hidden temporary name in the same
directory and renames it when complete, so the ERP never reads half a file.
``test_connection`` writes and deletes ``<export_path>/test_connection_<timestamp>.json``
the same way, so a passing test proves every permission an export needs.

Transports: SFTP (:mod:`connectors.erp.sftp`) or the issuer's own filesystem. The
filesystem mode writes only inside the org's own folder under
``ISSUER_ERP_DROPZONE_ROOT`` (:mod:`connectors.erp.orgfolder`): an org's admin must
not be able to make the issuer write anywhere else on its host, nor into another
org's folder, nor learn what exists outside its own. Unset, the mode is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import posixpath
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from connectors.erp import orgfolder
from connectors.erp.messages import EXPORT_PATH_NOT_FOUND, FILE_EXISTS, PERMISSION_DENIED
from connectors.erp.models import DraftOrder, DropzoneConfig
from connectors.erp.port import ConfigError, ConnectorError, ExportResult, TestResult
from issuer.clock import Clock, utc
from issuer.outbound import OutboundPolicy

log = logging.getLogger(__name__)

FILESYSTEM_DISABLED = ("filesystem mode is not enabled on this issuer "
                       "(ISSUER_ERP_DROPZONE_ROOT is unset)")


class Dropzone(Protocol):
    async def write(self, directory: str, name: str, data: bytes, *, atomic: bool) -> str: ...

    async def remove(self, path: str) -> None: ...


def timestamp(now: float) -> str:
    """``20260101T120000123456Z``: sortable, and legal in every file system."""
    return utc(now).strftime("%Y%m%dT%H%M%S%fZ")


class DropzoneConnector:
    config_model = DropzoneConfig

    def __init__(self, clock: Clock, filesystem_root: Path | None = None, *,
                 outbound: OutboundPolicy | None = None) -> None:
        self._clock = clock
        self._root = filesystem_root.resolve() if filesystem_root is not None else None
        # SFTP hosts are an org's choice: public addresses only, unless allowed.
        self._outbound = outbound or OutboundPolicy()

    def parse_config(self, data: Mapping[str, Any]) -> DropzoneConfig:
        config = DropzoneConfig.model_validate(data)
        if config.mode == "filesystem":
            if self._root is None:
                raise ConfigError("mode", FILESYSTEM_DISABLED)
            for field in ("export_path", "ack_path"):
                value = getattr(config, field)
                if value is not None:
                    _components(value, field)
        return config

    async def export(self, draft_order: DraftOrder, config: DropzoneConfig, *,
                     org_id: str) -> ExportResult:
        name = f"{draft_order.id}_{timestamp(self._clock.now())}.json"
        data = draft_order.model_dump_json().encode()
        async with self._open(config, org_id) as zone:
            path = await zone.write(config.export_path, name, data, atomic=config.atomic_write)
        return ExportResult(success=True, export_id=uuid.uuid4(), storage_key=path,
                            connector_metadata={"dropzone_path": path, "mode": config.mode,
                                                "bytes": len(data)})

    async def test_connection(self, config: DropzoneConfig, *, org_id: str) -> TestResult:
        started = time.perf_counter()
        now = self._clock.now()
        probe = json.dumps({"test": True, "written_at": utc(now).isoformat()}).encode()
        try:
            async with self._open(config, org_id) as zone:
                path = await zone.write(config.export_path, f"test_connection_{timestamp(now)}"
                                        ".json", probe, atomic=config.atomic_write)
                await zone.remove(path)
        except ConnectorError as error:
            return TestResult(False, error.message, _ms(started))
        return TestResult(True, None, _ms(started))

    @contextlib.asynccontextmanager
    async def _open(self, config: DropzoneConfig, org_id: str) -> AsyncIterator[Dropzone]:
        if config.mode == "sftp":
            # Loaded on first use: the SSH library costs every process start otherwise.
            from connectors.erp.sftp import SFTPDropzone

            async with SFTPDropzone.open(config, self._outbound) as zone:
                yield zone
        else:
            if self._root is None:
                raise ConfigError("mode", FILESYSTEM_DISABLED)
            yield LocalDropzone(self._root, org_id, _components(config.export_path))


def _components(path: str, field: str = "export_path") -> tuple[str, ...]:
    try:
        return orgfolder.components(path)
    except ValueError as error:
        raise ConfigError(field, str(error)) from None


class LocalDropzone:
    """A folder inside the org's folder on this host; blocking calls run on a worker
    thread. Paths it returns are the org's own (``export_path/name``), never where
    the root lies."""

    def __init__(self, root: Path, org_id: str, parts: tuple[str, ...]) -> None:
        self._root = root
        self._org_id = org_id
        self._parts = parts

    async def write(self, directory: str, name: str, data: bytes, *, atomic: bool) -> str:
        with self._mapped():
            await asyncio.to_thread(orgfolder.write, self._root, self._org_id, self._parts,
                                    name, data, atomic=atomic)
        return posixpath.join(directory, name)

    async def remove(self, path: str) -> None:
        with self._mapped():
            await asyncio.to_thread(orgfolder.remove, self._root, self._org_id, self._parts,
                                    posixpath.basename(path))

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """OS errors as the connector's fixed messages: they speak of the org's path
        only, and "not found" is all an org learns of a link or a file in its way."""
        try:
            yield
        except orgfolder.FolderRefused as refused:
            log.warning("dropzone of org %s: %s", self._org_id, refused)
            raise ConnectorError(EXPORT_PATH_NOT_FOUND, code="not_found") from None
        except PermissionError:
            raise ConnectorError(PERMISSION_DENIED, code="permission_denied") from None
        except (FileNotFoundError, NotADirectoryError):
            raise ConnectorError(EXPORT_PATH_NOT_FOUND, code="not_found") from None
        except FileExistsError:
            raise ConnectorError(FILE_EXISTS, code="file_exists") from None
        except OSError as error:
            code = errno.errorcode.get(error.errno or 0, "OSError")
            raise ConnectorError(f"Filesystem error ({code})", code="filesystem_error") from None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
