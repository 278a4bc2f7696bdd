"""ERP connector fixtures: a real asyncssh SFTP server on loopback, a silent TCP
port, orgs with their admin, integrator and worker clients.

The SFTP server is asyncssh's own (``asyncssh.listen``), with a password user (and
a public-key user), a host key generated per test and an SFTP root in ``tmp_path``.
The tests run as root, and root writes through mode bits: a ``chmod 0o555``
directory would still take root's files. The server's SFTP handler therefore
checks the mode bits as the kernel would for an ordinary (non-root) server
account -- no write bit on a directory, no creating, renaming or removing in it --
and answers SSH_FX_PERMISSION_DENIED, exactly what OpenSSH's sftp-server running
as that account answers. The refusal is real (the file is never created); only
who enforces it differs, and it does not depend on the machine's user.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from connectors.erp.models import Customer, DraftOrder, OrderLine
from issuer.settings import Settings
from tests.conftest import Registrar, issue_token

#: The test SFTP servers listen on loopback, which outbound connections refuse by
#: default: the tests allow it, as an operator would allow a private network.
LOOPBACK = ("127.0.0.0/8",)

USER = "erp"
PASSWORD = "s3cret-Pa55word-for-tests"  # scanned for in responses and logs
_WRITE_FLAGS = (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
                | asyncssh.FXF_APPEND)


@dataclass
class SFTPState:
    """What the server saw, for assertions; ``slow_writes`` delays each write."""

    root: Path
    opened_for_write: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    slow_writes: float = 0.0


class _SSHServer(asyncssh.SSHServer):
    def __init__(self, client_key: asyncssh.SSHKey) -> None:
        self._client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == USER and key.public_data == self._client_key.public_data


class _ModeBitsSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server in a chroot, refusing writes the mode bits refuse."""

    def __init__(self, chan: asyncssh.SSHServerChannel, state: SFTPState) -> None:
        super().__init__(chan, chroot=str(state.root).encode())
        self._state = state

    def _relative(self, path: bytes) -> str:
        return os.path.relpath(self.map_path(path).decode(), self._state.root)

    def _writable_parent(self, path: bytes) -> None:
        parent = os.path.dirname(self.map_path(path))
        if not os.stat(parent).st_mode & stat.S_IWUSR:
            raise asyncssh.SFTPPermissionDenied("read-only directory")

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & _WRITE_FLAGS:
            self._writable_parent(path)
            self._state.opened_for_write.append(self._relative(path))
        return super().open(path, pflags, attrs)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:  # type: ignore[override]
        if self._state.slow_writes:
            await asyncio.sleep(self._state.slow_writes)
        return super().write(file_obj, offset, data)  # type: ignore[arg-type]

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._writable_parent(oldpath)
        self._writable_parent(newpath)
        self._state.renamed.append((self._relative(oldpath), self._relative(newpath)))
        super().rename(oldpath, newpath)

    def remove(self, path: bytes) -> None:
        self._writable_parent(path)
        self._state.removed.append(self._relative(path))
        super().remove(path)


@dataclass
class SFTPServer:
    port: int
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    state: SFTPState

    @property
    def known_hosts_line(self) -> str:
        public = self.host_key.export_public_key("openssh").decode().strip()
        return f"[127.0.0.1]:{self.port} {public}"

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A DROPZONE_JSON_V1 body for this server (password auth, host key pinned)."""
        return {"mode": "sftp", "host": "127.0.0.1", "port": self.port, "username": USER,
                "password": PASSWORD, "host_key": self.known_hosts_line,
                "export_path": "/inbound", "ack_path": "/ack", **overrides}

    def files(self, directory: str = "inbound") -> list[str]:
        return sorted(os.listdir(self.state.root / directory))


@pytest.fixture
async def sftp_server(tmp_path: Path) -> AsyncIterator[SFTPServer]:
    root = tmp_path / "sftp-root"
    for name in ("inbound", "ack", "readonly"):
        (root / name).mkdir(parents=True)
    (root / "readonly").chmod(0o555)
    state = SFTPState(root=root)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    listener = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key],
        server_factory=lambda: _SSHServer(client_key),
        sftp_factory=lambda chan: _ModeBitsSFTPServer(chan, state), allow_scp=False)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield SFTPServer(port, host_key, client_key, state)
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word (no SSH banner)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def dropzone_root(tmp_path: Path) -> Path:
    root = tmp_path / "dropzone"
    (root / "orders").mkdir(parents=True)
    return root


@pytest.fixture
def settings(settings: Settings, dropzone_root: Path) -> Settings:
    """The shared test settings with the filesystem dropzone and MOCK enabled, and
    the test SFTP servers' loopback allowed (issuer.outbound refuses it by default)."""
    return replace(settings, erp_dropzone_root=dropzone_root, erp_mock_connector=True,
                   outbound_allowed_networks=LOOPBACK)


def draft_order(org_id: str, **overrides: Any) -> DraftOrder:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(), "org_id": org_id, "external_reference": "PO-4711",
        "customer": Customer(id="C-1", name="Ada Lovelace", email="ada@example.com"),
        "lines": [OrderLine(sku="SKU-1", qty=Decimal("2"), price=Decimal("19.90")),
                  OrderLine(sku="SKU-2", qty=Decimal("0.5"), price=Decimal("4.00"))],
        "currency": "EUR", "metadata": {"channel": "web", "tags": ["b2b"]}}
    return DraftOrder(**{**fields, **overrides})


@dataclass
class Org:
    """One org (tenant) and Bearer headers of its admin, integrator and worker."""

    id: str
    admin: dict[str, str]
    integrator: dict[str, str]
    worker: dict[str, str]


@pytest.fixture
def make_org(client: httpx.AsyncClient, register: Registrar
             ) -> Callable[[str], Awaitable[Org]]:
    async def make(name: str) -> Org:
        admin, integrator, worker = await register.many(
            {"tenant": name, "allowed_scopes": ["admin"]},
            {"tenant": name, "allowed_scopes": ["integrator"]},
            {"tenant": name, "allowed_scopes": ["orders:read"]})
        return Org(admin.tenant_id, bearer(await issue_token(client, admin, "admin")),
                   bearer(await issue_token(client, integrator, "integrator")),
                   bearer(await issue_token(client, worker, "orders:read")))

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
