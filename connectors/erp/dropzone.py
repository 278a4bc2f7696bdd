"""DROPZONE_JSON_V1: the draft order as a JSON file in a directory the ERP polls.

``export`` writes ``<export_path>/<order-id>_<timestamp>.json``; with
``atomic_write`` (the default) it writes a hidden temporary name in the same
directory and renames it when complete, so the ERP never reads half a file.
``test_connection`` writes and deletes ``<export_path>/test_connection_<timestamp>.json``
the same way, so a passing test proves every permission an export needs.

Transports: SFTP (:mod:`connectors.erp.sftp`) or the issuer's own filesystem. The
filesystem mode writes only under ``ISSUER_ERP_DROPZONE_ROOT`` (``export_path`` is
relative to it, and may not leave it, symlinks included): an org's admin must not
be able to make the issuer write anywhere else on its host. Unset, the mode is
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import posixpath
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from connectors.erp.models import DraftOrder, DropzoneConfig
from connectors.erp.port import ConfigError, ConnectorError, ExportResult, TestResult
from connectors.erp.sftp import (
    EXPORT_PATH_NOT_FOUND,
    FILE_EXISTS,
    PERMISSION_DENIED,
    SFTPDropzone,
)
from issuer.clock import Clock, utc
from issuer.outbound import OutboundPolicy

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
            self._local_path(config.export_path)
            if config.ack_path is not None:
                self._local_path(config.ack_path, field="ack_path")
        return config

    async def export(self, draft_order: DraftOrder, config: DropzoneConfig) -> ExportResult:
        name = f"{draft_order.id}_{timestamp(self._clock.now())}.json"
        data = draft_order.model_dump_json().encode()
        async with self._open(config) as zone:
            path = await zone.write(config.export_path, name, data, atomic=config.atomic_write)
        return ExportResult(success=True, export_id=uuid.uuid4(), storage_key=path,
                            connector_metadata={"dropzone_path": path, "mode": config.mode,
                                                "bytes": len(data)})

    async def test_connection(self, config: DropzoneConfig) -> TestResult:
        started = time.perf_counter()
        now = self._clock.now()
        probe = json.dumps({"test": True, "written_at": utc(now).isoformat()}).encode()
        try:
            async with self._open(config) as zone:
                path = await zone.write(config.export_path, f"test_connection_{timestamp(now)}"
                                        ".json", probe, atomic=config.atomic_write)
                await zone.remove(path)
        except ConnectorError as error:
            return TestResult(False, error.message, _ms(started))
        return TestResult(True, None, _ms(started))

    @contextlib.asynccontextmanager
    async def _open(self, config: DropzoneConfig) -> AsyncIterator[Dropzone]:
        if config.mode == "sftp":
            async with SFTPDropzone.open(config, self._outbound) as zone:
                yield zone
        else:
            yield LocalDropzone(self._local_path(config.export_path), config.export_path)

    def _local_path(self, path: str, *, field: str = "export_path") -> Path:
        if self._root is None:
            raise ConfigError("mode", FILESYSTEM_DISABLED)
        resolved = (self._root / path.lstrip("/")).resolve()
        if resolved != self._root and self._root not in resolved.parents:
            raise ConfigError(field, "must stay inside the dropzone root")
        return resolved


class LocalDropzone:
    """A directory of this host; blocking calls run on a worker thread."""

    def __init__(self, directory: Path, shown_as: str) -> None:
        self._directory = directory
        self._shown_as = shown_as  # what the org configured, not where the root lies

    async def write(self, directory: str, name: str, data: bytes, *, atomic: bool) -> str:
        with _mapped():
            await asyncio.to_thread(_write, self._directory, name, data, atomic)
        return posixpath.join(self._shown_as, name)

    async def remove(self, path: str) -> None:
        with _mapped():
            await asyncio.to_thread(os.remove, self._directory / posixpath.basename(path))


def _write(directory: Path, name: str, data: bytes, atomic: bool) -> None:
    final = directory / name
    if not atomic:
        _write_file(final, data)
        return
    temporary = directory / f".{name}.{secrets.token_hex(4)}.tmp"
    _write_file(temporary, data)
    try:
        os.link(temporary, final)  # atomic, and refuses to replace an existing file
    finally:
        os.unlink(temporary)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the new name is durable too
    finally:
        os.close(descriptor)


def _write_file(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
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
