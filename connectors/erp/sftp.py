"""DROPZONE_JSON_V1 over SFTP (asyncssh): connect, write, rename, remove.

The connection is verified against the configured host key (``insecure_skip_host_key``
turns that off, explicitly), authenticates with the configured password or private
key only -- never an agent, ``~/.ssh`` keys or ``~/.ssh/config`` of the issuer's
host -- and gives up after ``timeout_seconds`` (TCP, SSH handshake and login
together). Failures become :class:`ConnectorError` with the fixed messages below;
no asyncssh text (which may quote the server) reaches the caller.

A host whose name does not resolve and one that resolves only to addresses the
outbound policy refuses get the same message and code (:data:`HOST_NOT_RESOLVED`):
telling them apart would let an org probe which names exist on the operator's
internal DNS. The operator's log keeps the precise reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import secrets
import socket
from collections.abc import AsyncIterator, Iterator

import asyncssh
from asyncssh import SSHKey

from connectors.erp.messages import (
    AUTHENTICATION_FAILED,
    CONNECTION_REFUSED,
    CONNECTION_TIMEOUT,
    EXPORT_PATH_NOT_FOUND,
    FILE_EXISTS,
    HOST_KEY_MISMATCH,
    HOST_NOT_RESOLVED,
    HOST_UNREACHABLE,
    PERMISSION_DENIED,
    SSH_FAILED,
)
from connectors.erp.models import DropzoneConfig, trusted_host_key
from connectors.erp.port import ConnectorError
from issuer.outbound import DestinationRefused, OutboundPolicy

log = logging.getLogger(__name__)


def connector_error(error: BaseException) -> ConnectorError:
    """The one mapping from what asyncssh and the socket layer raise to our messages.
    Order matters: ``TimeoutError`` and ``ConnectionRefusedError`` are ``OSError``s."""
    if isinstance(error, ConnectorError):
        return error
    if isinstance(error, DestinationRefused | socket.gaierror):  # see the module's docstring
        return ConnectorError(HOST_NOT_RESOLVED, code="unreachable")
    if isinstance(error, asyncssh.PermissionDenied):
        return ConnectorError(AUTHENTICATION_FAILED, code="authentication_failed")
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return ConnectorError(HOST_KEY_MISMATCH, code="host_key_mismatch")
    if isinstance(error, TimeoutError):
        return ConnectorError(CONNECTION_TIMEOUT, code="timeout")
    if isinstance(error, asyncssh.SFTPPermissionDenied):
        return ConnectorError(PERMISSION_DENIED, code="permission_denied")
    if isinstance(error, asyncssh.SFTPNoSuchFile):
        return ConnectorError(EXPORT_PATH_NOT_FOUND, code="not_found")
    if isinstance(error, asyncssh.SFTPFileAlreadyExists):
        return ConnectorError(FILE_EXISTS, code="file_exists")
    if isinstance(error, asyncssh.SFTPError):
        return ConnectorError(f"SFTP error ({type(error).__name__})", code="sftp_error")
    if isinstance(error, asyncssh.Error):
        return ConnectorError(f"{SSH_FAILED} ({type(error).__name__})", code="ssh_error")
    if isinstance(error, ConnectionRefusedError):
        return ConnectorError(CONNECTION_REFUSED, code="unreachable")
    if isinstance(error, OSError):
        return ConnectorError(HOST_UNREACHABLE, code="unreachable")
    return ConnectorError(f"{SSH_FAILED} ({type(error).__name__})", code="ssh_error")


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except (asyncssh.Error, OSError, ConnectorError, DestinationRefused) as error:
        raise connector_error(error) from None


async def _resolve(outbound: OutboundPolicy, host: str, port: int) -> list[str]:
    """The permitted addresses of ``host``; why there is none goes to the operator's
    log only (the org gets :data:`HOST_NOT_RESOLVED` either way)."""
    try:
        return await outbound.resolve(host, port)
    except DestinationRefused as refused:
        log.warning("SFTP host refused by the outbound policy: %s", refused)
        raise
    except socket.gaierror as error:
        log.warning("SFTP host %r does not resolve: %s", host, error.strerror)
        raise


class SFTPDropzone:
    """One logged-in SFTP session: ``async with SFTPDropzone.open(config) as zone``."""

    def __init__(self, sftp: asyncssh.SFTPClient, timeout: float) -> None:
        self._sftp = sftp
        self._timeout = timeout

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: DropzoneConfig, outbound: OutboundPolicy
                   ) -> AsyncIterator[SFTPDropzone]:
        """Connect to an address of ``config.host`` that ``outbound`` permits (the
        name is resolved and checked here, then the checked address is dialled)."""
        assert config.host is not None and config.username is not None
        # asyncssh's (trusted host keys, trusted CA keys, revoked keys) form.
        known_hosts: tuple[list[SSHKey], list[SSHKey], list[SSHKey]] | None = (
            None if config.insecure_skip_host_key or config.host_key is None
            else ([trusted_host_key(config.host_key)], [], []))
        keys = ([asyncssh.import_private_key(config.private_key.get_secret_value())]
                if config.private_key is not None else [])
        with _mapped():
            async with asyncio.timeout(config.timeout_seconds):
                addresses = await _resolve(outbound, config.host, config.port)
                connection = await asyncssh.connect(
                    addresses[0], config.port, username=config.username,
                    password=config.password.get_secret_value() if config.password else None,
                    client_keys=keys, known_hosts=known_hosts, agent_path=None, config=None,
                    keepalive_interval=0)
            try:
                async with asyncio.timeout(config.timeout_seconds):
                    sftp = await connection.start_sftp_client()
                async with sftp:
                    yield cls(sftp, config.timeout_seconds)
            finally:
                connection.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(config.timeout_seconds):
                        await connection.wait_closed()

    async def write(self, directory: str, name: str, data: bytes, *, atomic: bool) -> str:
        """Write ``directory/name``; with ``atomic``, to a hidden temporary name in the
        same directory first, renamed once complete (SFTP rename does not replace)."""
        final = posixpath.join(directory, name)
        target = posixpath.join(directory, f".{name}.{secrets.token_hex(4)}.tmp") if atomic \
            else final
        with _mapped():
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._sftp.open(target, "xb") as handle:
                        await handle.write(data)
                    if atomic:
                        await self._sftp.rename(target, final)
            except BaseException:
                if atomic:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(self._timeout):
                            await self._sftp.remove(target)
                raise
        return final

    async def remove(self, path: str) -> None:
        with _mapped():
            async with asyncio.timeout(self._timeout):
                await self._sftp.remove(path)
