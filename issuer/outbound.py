"""Outbound connections to places a tenant chose: only to public addresses.

A client's ``jwks_uri`` and an SFTP dropzone's ``host`` are set by tenant or org
admins, and the issuer connects to them from inside the operator's network. Left
open, that is a server-side request forgery: a tenant could point the issuer at
the cloud metadata service (169.254.169.254), at the database, or at an admin
port on loopback. So every such connection resolves the name itself, checks
every address it would connect to, and connects to the checked address -- never
to the name again, so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot slip through.

An address is allowed when it is globally routable (:attr:`ipaddress.IPv4Address.is_global`:
not loopback, private, link-local, shared (100.64/10), reserved or documentation
space) and not multicast, or when it lies in a network the operator allows
(``ISSUER_OUTBOUND_ALLOWED_NETWORKS``, e.g. a partner's SFTP server on a private
link). NetSuite's hosts are not covered here: they are held to NetSuite's own
domains (connectors.netsuite.accounts).

An IPv6 address that carries an IPv4 address reaches that IPv4 address (through
a translator, a tunnel relay or the host's own stack), so it is judged by what
it embeds, every embedded address having to pass: IPv4-mapped ``::ffff:0:0/96``,
IPv4-translated ``::ffff:0:0:0/96``, IPv4-compatible ``::/96``, NAT64
``64:ff9b::/96`` (the last 32 bits), 6to4 ``2002::/16`` (bits 16-47) and Teredo
``2001::/32`` (the server, bits 32-63, and the client, the last 32 bits
inverted). So ``64:ff9b::7f00:1`` is loopback, ``2002:a9fe:a9fe::`` the metadata
service, and ``64:ff9b::808:808`` is 8.8.8.8, public. The local-use NAT64 prefix
``64:ff9b:1::/48`` (RFC 8215) is refused outright: it is not global, and where its
IPv4 address sits depends on the prefix length a site chose (RFC 6052 allows /48
to /96 inside it), so no single reading is safe; a site that runs one allows
its prefix in ``ISSUER_OUTBOUND_ALLOWED_NETWORKS``. An allowed network permits an
address in it, and an embedding address whose every embedded address is in one
or public.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


#: Prefixes whose addresses carry an IPv4 address (see the module's docstring).
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")
_LOW_32 = (IPV4_MAPPED, IPV4_TRANSLATED, IPV4_COMPATIBLE, NAT64)


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses ``address`` carries (none for an ordinary IPv6 address)."""
    if any(address in prefix for prefix in _LOW_32):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def _public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


class DestinationRefused(Exception):
    """Every address of the host is one this issuer does not connect to."""

    def __init__(self, host: str, addresses: Iterable[str]) -> None:
        shown = ", ".join(sorted(set(addresses))) or "none"
        super().__init__(f"{host} resolves to an address that is not public ({shown}); "
                         "an operator can allow its network with "
                         "ISSUER_OUTBOUND_ALLOWED_NETWORKS")
        self.host = host


@dataclass(frozen=True)
class OutboundPolicy:
    """Public addresses, plus ``allowed`` networks (CIDR strings or networks)."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str]) -> OutboundPolicy:
        return cls(tuple(ipaddress.ip_network(network, strict=False) for network in networks))

    def permits(self, address: IPAddress) -> bool:
        if self._allowed(address):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            if address in LOCAL_NAT64:
                return False
            embedded = embedded_ipv4(address)
            if embedded:
                return all(self._allowed(inner) or _public(inner) for inner in embedded)
        return _public(address)

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` this policy permits, in the resolver's order;
        :class:`DestinationRefused` when there is none (``OSError`` when the name
        does not resolve at all)."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
            # sockaddr[0] is the address; an IPv6 one may carry a "%scope" suffix.
            found = [str(info[4][0]).split("%", 1)[0] for info in infos]
        else:
            found = [str(literal)]
        permitted = [address for address in dict.fromkeys(found)
                     if self.permits(ipaddress.ip_address(address))]
        if not permitted:
            raise DestinationRefused(host, found)
        return permitted


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, connecting only to addresses the policy permits. TLS
    still names the URL's host (httpcore sends the origin's name as SNI and checks
    the certificate against it), so only the TCP destination changes."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._policy.resolve(host, port)
        except DestinationRefused as error:
            raise httpcore.ConnectError(str(error)) from None
        except OSError as error:
            raise httpcore.ConnectError(f"{host}: {error}") from None
        last: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except httpcore.ConnectError as error:
                last = error
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound connections to unix sockets are refused")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS client context (certificates verified against certifi's CA
    bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), built once per process and shared
    by every outbound client: loading the CA bundle takes tens of milliseconds, and
    nothing changes the context after it is built."""
    return httpx.create_ssl_context()


def guarded_transport(policy: OutboundPolicy) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go only where ``policy`` permits.

    httpx takes no network backend, so the transport's connection pool is
    replaced by one built on the guarded backend, with httpx's defaults (TLS
    verification on, HTTP/1.1, no proxies from the environment).
    """
    transport = httpx.AsyncHTTPTransport(verify=tls_context())
    transport._pool = httpcore.AsyncConnectionPool(  # httpx takes no backend: see above
        ssl_context=tls_context(),
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,
        network_backend=_GuardedBackend(policy),
    )
    return transport
