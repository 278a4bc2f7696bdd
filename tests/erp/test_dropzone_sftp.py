"""DROPZONE_JSON_V1 against a real asyncssh SFTP server on loopback (and the local
filesystem): each failure the issue names, with exactly its message."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import asyncssh
import pytest

from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.port import ConnectorError
from issuer.clock import SystemClock
from issuer.outbound import OutboundPolicy
from tests.erp.conftest import LOOPBACK, draft_order

ORG = "org-1"


@pytest.fixture
def connector(dropzone_root: Path) -> DropzoneConnector:
    return DropzoneConnector(SystemClock(), dropzone_root,
                             outbound=OutboundPolicy.allowing(LOOPBACK))


async def test_connection_success_writes_the_test_file_then_deletes_it(connector, sftp_server):
    config = connector.parse_config(sftp_server.config())
    result = await connector.test_connection(config, org_id=ORG)
    assert result.success, result.error_message
    assert result.error_message is None and result.latency_ms > 0
    state = sftp_server.state
    (renamed_from, final), = state.renamed
    assert final.startswith("inbound/test_connection_") and final.endswith(".json")
    assert state.removed == [final]
    assert state.opened_for_write == [renamed_from]
    assert sftp_server.files() == []


async def test_private_key_authentication_works_too(connector, sftp_server):
    key = sftp_server.client_key.export_private_key("openssh").decode()
    config = connector.parse_config(sftp_server.config(password=None, private_key=key))
    assert (await connector.test_connection(config, org_id=ORG)).success


@pytest.mark.parametrize(("overrides", "message"), [
    ({"password": "wrong"}, "Authentication failed"),
    ({"username": "nobody"}, "Authentication failed"),
    ({"export_path": "/readonly"}, "Permission denied"),
    ({"export_path": "/missing"}, "Export path not found"),
])
async def test_connection_failures_have_exact_messages(connector, sftp_server, overrides,
                                                        message):
    result = await connector.test_connection(connector.parse_config(sftp_server.config(
        **overrides)), org_id=ORG)
    assert (result.success, result.error_message) == (False, message)
    assert sftp_server.files("readonly") == []


async def test_a_silent_tcp_port_is_a_connection_timeout(connector, silent_port):
    config = connector.parse_config({
        "mode": "sftp", "host": "127.0.0.1", "port": silent_port, "username": "erp",
        "password": "x", "insecure_skip_host_key": True, "export_path": "/inbound",
        "timeout_seconds": 0.5})
    started = time.perf_counter()
    result = await connector.test_connection(config, org_id=ORG)
    assert (result.success, result.error_message) == (False, "Connection timeout")
    assert 0.4 < time.perf_counter() - started < 3


async def test_a_host_key_mismatch_is_its_own_message(connector, sftp_server):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    result = await connector.test_connection(connector.parse_config(sftp_server.config(
        host_key=other)), org_id=ORG)
    assert result.error_message == ("Host key verification failed: the server's host key is "
                                    "not host_key")
    assert sftp_server.state.opened_for_write == []


async def test_a_bare_public_key_pins_the_host_as_well(connector, sftp_server):
    bare = sftp_server.host_key.export_public_key().decode()
    assert (await connector.test_connection(connector.parse_config(sftp_server.config(
        host_key=bare)), org_id=ORG)).success


async def test_an_unreachable_host_says_so(connector, sftp_server, silent_port):
    # A port nobody listens on: take a free one, close it.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    result = await connector.test_connection(connector.parse_config(sftp_server.config(
        port=port)), org_id=ORG)
    assert result.error_message == "Host unreachable: connection refused"
    result = await connector.test_connection(connector.parse_config(sftp_server.config(
        host="no-such-host.invalid")), org_id=ORG)
    assert result.error_message == "Host unreachable: name not found or not a public address"


async def test_atomic_export_shows_no_partial_file_and_writes_the_order_json(connector,
                                                                             sftp_server):
    """The write is slowed on the server; meanwhile the export directory is watched:
    no visible file ever appears before it is complete, and the final content is
    the order's JSON."""
    order = draft_order("org-1", metadata={"blob": "x" * 200_000})  # several SFTP writes
    sftp_server.state.slow_writes = 0.05
    inbound = sftp_server.state.root / "inbound"
    seen: dict[str, set[bytes]] = {}
    hidden: set[str] = set()
    done = asyncio.Event()

    def scan() -> None:
        for path in inbound.iterdir():
            if path.name.startswith("."):
                hidden.add(path.name)
            else:
                seen.setdefault(path.name, set()).add(path.read_bytes())

    async def watch() -> None:
        while not done.is_set():
            scan()
            await asyncio.sleep(0.005)
        scan()

    watcher = asyncio.create_task(watch())
    try:
        result = await connector.export(order, connector.parse_config(sftp_server.config()),
                                        org_id=ORG)
    finally:
        done.set()
        await watcher
    final = result.connector_metadata["dropzone_path"]
    assert result.success and result.storage_key == final
    assert final.startswith(f"/inbound/{order.id}_") and final.endswith(".json")
    content = (sftp_server.state.root / final.lstrip("/")).read_bytes()
    assert json.loads(content) == order.model_dump(mode="json")
    (temporary, renamed_to), = sftp_server.state.renamed
    assert hidden == {Path(temporary).name}  # watched while the write was under way
    assert seen == {Path(final).name: {content}}  # visible only once complete
    assert renamed_to == final.lstrip("/")
    assert Path(temporary).parent == Path(renamed_to).parent
    assert Path(temporary).name.startswith(".")
    assert final.lstrip("/") not in sftp_server.state.opened_for_write
    assert sftp_server.files() == [Path(final).name]


async def test_non_atomic_export_writes_the_final_name_directly(connector, sftp_server):
    order = draft_order("org-1")
    result = await connector.export(order, connector.parse_config(sftp_server.config(
        atomic_write=False)), org_id=ORG)
    assert sftp_server.state.renamed == []
    assert sftp_server.state.opened_for_write == [result.storage_key.lstrip("/")]


async def test_export_failure_raises_connector_error(connector, sftp_server):
    with pytest.raises(ConnectorError) as raised:
        await connector.export(draft_order("org-1"), connector.parse_config(
            sftp_server.config(export_path="/readonly")), org_id=ORG)
    assert raised.value.message == "Permission denied"
    assert sftp_server.files("readonly") == []


async def test_filesystem_mode_writes_atomically_inside_the_orgs_folder(connector,
                                                                        dropzone_root):
    order = draft_order(ORG, id=uuid.uuid4())
    (dropzone_root / ORG / "orders").mkdir(parents=True)
    config = connector.parse_config({"mode": "filesystem", "export_path": "orders"})
    assert (await connector.test_connection(config, org_id=ORG)).success
    result = await connector.export(order, config, org_id=ORG)
    (written,) = (dropzone_root / ORG / "orders").iterdir()
    assert result.connector_metadata["dropzone_path"] == f"orders/{written.name}"
    assert json.loads(written.read_bytes()) == order.model_dump(mode="json")
    assert list((dropzone_root / "orders").iterdir()) == []  # the shared root is not used
    missing = await connector.test_connection(connector.parse_config(
        {"mode": "filesystem", "export_path": "nowhere"}), org_id=ORG)
    assert missing.error_message == "Export path not found"
