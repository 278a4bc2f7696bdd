"""Outbound connections to places a tenant chose (issuer.outbound): public addresses
only, unless the operator allows a network -- so a client's ``jwks_uri`` or an SFTP
dropzone's ``host`` cannot point the issuer at its own network (SSRF).

Each refusal is proven at a real listening socket that never sees a connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from joserfc.jwk import RSAKey

from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.messages import HOST_NOT_RESOLVED
from issuer.clock import SystemClock
from issuer.outbound import DestinationRefused, OutboundPolicy, guarded_transport
from issuer.settings import Settings, SettingsError
from tests.conftest import app_client
from tests.oauth.test_rfc7523_private_key_jwt import Assertions, denial_reasons


class Listener:
    """A TCP server on loopback that counts the connections it accepts and answers
    a plain HTTP GET with ``{}`` (and hangs up on anything else)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if await reader.read(3) != b"GET":  # a TLS handshake: hang up at once
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = Listener()
    await server.start()
    yield server
    await server.close()


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254",  # the cloud metadata service
    "100.64.0.1",  # shared address space (carrier NAT)
    "0.0.0.0", "224.0.0.1", "192.0.2.10",  # noqa: S104 -- unspecified, multicast, documentation
    "::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
])
def test_addresses_that_are_not_public_are_refused(address):
    assert not OutboundPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111",
                                     "::ffff:1.1.1.1"])
def test_public_addresses_are_permitted(address):
    assert OutboundPolicy().permits(ipaddress.ip_address(address))


#: IPv6 addresses that carry a non-public IPv4 address, and what they carry.
EMBEDDING_PRIVATE = [
    ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
    ("64:ff9b::a00:1", "NAT64 of 10.0.0.1"),
    ("2002:7f00:1::", "6to4 of 127.0.0.1"),
    ("2002:a9fe:a9fe::", "6to4 of 169.254.169.254"),
    ("2002:c0a8:101::1", "6to4 of 192.168.1.1"),
    ("::7f00:1", "IPv4-compatible 127.0.0.1"),
    ("::a9fe:a9fe", "IPv4-compatible 169.254.169.254"),
    ("::ffff:0:7f00:1", "IPv4-translated 127.0.0.1"),
    ("::ffff:0:a9fe:a9fe", "IPv4-translated 169.254.169.254"),
    ("2001:0:808:808::80ff:fffe", "Teredo, client 127.0.0.1 (inverted), server 8.8.8.8"),
    ("2001:0:7f00:1::f7f7:f7f7", "Teredo, server 127.0.0.1, client 8.8.8.8"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo, client 192.0.2.45 (RFC 4380's)"),
    ("64:ff9b:1::7f00:1", "local-use NAT64 (RFC 8215): refused whatever it carries"),
    ("64:ff9b:1::808:808", "local-use NAT64 (RFC 8215): refused whatever it carries"),
]
#: IPv6 addresses whose every embedded IPv4 address is public: judged by it, permitted.
EMBEDDING_PUBLIC = [
    ("64:ff9b::808:808", "NAT64 of 8.8.8.8"),
    ("2002:808:808::1", "6to4 of 8.8.8.8"),
    ("::808:808", "IPv4-compatible 8.8.8.8"),
    ("::ffff:0:808:808", "IPv4-translated 8.8.8.8"),
    ("2001:0:808:808::f7f7:f7f7", "Teredo, server and client 8.8.8.8"),
]


@pytest.mark.parametrize(("address", "carries"), EMBEDDING_PRIVATE)
async def test_an_ipv6_address_is_refused_when_what_it_embeds_is_not_public(address, carries):
    policy = OutboundPolicy()
    assert not policy.permits(ipaddress.ip_address(address)), carries
    with pytest.raises(DestinationRefused):
        await policy.resolve(address, 22)
    with pytest.raises(DestinationRefused):
        await policy.resolve(f"[{address}]", 443)  # as a URL's host


@pytest.mark.parametrize(("address", "carries"), EMBEDDING_PUBLIC)
async def test_an_ipv6_address_embedding_public_ipv4_is_judged_by_it(address, carries):
    policy = OutboundPolicy()
    assert policy.permits(ipaddress.ip_address(address)), carries
    assert await policy.resolve(address, 22) == [address]


def test_an_allowed_network_covers_the_ipv4_addresses_embedded_in_ipv6():
    policy = OutboundPolicy.allowing(["10.20.0.0/16"])
    assert policy.permits(ipaddress.ip_address("64:ff9b::a14:304"))  # NAT64 of 10.20.3.4
    assert policy.permits(ipaddress.ip_address("2002:a14:304::"))  # 6to4 of 10.20.3.4
    assert not policy.permits(ipaddress.ip_address("64:ff9b::a15:1"))  # 10.21.0.1
    local = OutboundPolicy.allowing(["64:ff9b:1:ab::/96"])  # a site's local NAT64 prefix
    assert local.permits(ipaddress.ip_address("64:ff9b:1:ab::a00:1"))
    assert not local.permits(ipaddress.ip_address("64:ff9b:1:ac::a00:1"))


@pytest.mark.parametrize("address", [address for address, _ in EMBEDDING_PRIVATE[:10]])
async def test_an_sftp_host_embedding_a_private_ipv4_is_refused_without_a_connection(
        address, caplog):
    # The real path: a DROPZONE_JSON_V1 test of an SFTP host given as that literal.
    connector = DropzoneConnector(SystemClock())
    config = connector.parse_config({
        "mode": "sftp", "host": address, "port": 22, "username": "erp",
        "password": "not-used", "insecure_skip_host_key": True, "export_path": "/in",
        "timeout_seconds": 5})
    result = await connector.test_connection(config, org_id="org-1")
    assert (result.success, result.error_message) == (False, HOST_NOT_RESOLVED)
    assert result.latency_ms < 1000  # refused before dialling, not a timed-out dial
    assert f"{address} resolves to an address that is not public" in caplog.text


def test_an_allowed_network_is_permitted_and_nothing_beside_it():
    policy = OutboundPolicy.allowing(["10.20.0.0/16"])
    assert policy.permits(ipaddress.ip_address("10.20.3.4"))
    assert not policy.permits(ipaddress.ip_address("10.21.0.1"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.1"))


async def test_a_name_is_judged_by_what_it_resolves_to():
    # "localhost" is a name, not a literal: the check is on its addresses.
    with pytest.raises(DestinationRefused, match="localhost resolves to an address"):
        await OutboundPolicy().resolve("localhost", 443)
    assert "127.0.0.1" in await OutboundPolicy.allowing(["127.0.0.0/8", "::1/128"]).resolve(
        "localhost", 443)


async def test_the_guarded_http_client_never_connects_to_loopback(listener):
    async with httpx.AsyncClient(transport=guarded_transport(OutboundPolicy())) as http:
        with pytest.raises(httpx.ConnectError, match="not public"):
            await http.get(f"http://127.0.0.1:{listener.port}/")
        with pytest.raises(httpx.ConnectError, match="not public"):
            await http.get(f"http://localhost:{listener.port}/")
    assert listener.accepted == 0


async def test_the_guarded_http_client_connects_where_the_operator_allows(listener):
    policy = OutboundPolicy.allowing(["127.0.0.0/8"])
    async with httpx.AsyncClient(transport=guarded_transport(policy)) as http:
        response = await http.get(f"http://127.0.0.1:{listener.port}/")
    assert response.status_code == 200
    assert response.json() == {}
    assert listener.accepted == 1


async def test_a_jwks_uri_on_the_issuers_own_network_is_never_fetched(
        settings, clock, register, engine, listener, rsa):
    # RFC 7523 private_key_jwt through /token, on the issuer's own outbound client
    # (none injected): the client's keys are "at" a loopback address.
    jwks_uri = f"https://127.0.0.1:{listener.port}/jwks.json"
    client = await register(auth_methods=["private_key_jwt"], jwks_uri=jwks_uri)
    assertions = Assertions(clock)
    async with app_client(settings, clock) as http:
        response = await http.post("/token", data=assertions.form(
            assertions.sign(rsa, client.client_id)))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert listener.accepted == 0
    assert "client_jwks_unavailable" in await denial_reasons(engine)
    # The same request with loopback allowed does reach the listener (which speaks
    # no TLS, so the fetch still fails): the policy is what stopped it before.
    allowed = replace(settings, outbound_allowed_networks=("127.0.0.0/8",))
    async with app_client(allowed, clock) as http:
        response = await http.post("/token", data=assertions.form(
            assertions.sign(rsa, client.client_id)))
    assert response.status_code == 401
    assert listener.accepted == 1


async def test_an_sftp_host_on_the_issuers_own_network_is_refused_without_a_connection(
        listener, tmp_path):
    connector = DropzoneConnector(SystemClock())
    config = connector.parse_config({
        "mode": "sftp", "host": "127.0.0.1", "port": listener.port, "username": "erp",
        "password": "not-used", "insecure_skip_host_key": True, "export_path": "/in"})
    result = await connector.test_connection(config, org_id="org-1")
    assert not result.success
    assert result.error_message == HOST_NOT_RESOLVED
    assert "127.0.0.1" not in result.error_message  # the org is not told the address
    assert listener.accepted == 0


def test_allowed_networks_are_read_from_the_environment():
    settings = Settings.from_env({"ISSUER_OUTBOUND_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.7.7"},
                                 env_file=None)
    assert settings.outbound_allowed_networks == ("10.0.0.0/8", "192.168.7.7")
    with pytest.raises(SettingsError, match="ISSUER_OUTBOUND_ALLOWED_NETWORKS"):
        Settings.from_env({"ISSUER_OUTBOUND_ALLOWED_NETWORKS": "intranet"}, env_file=None)


@pytest.fixture(scope="module")
def rsa() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "outbound-test"})
