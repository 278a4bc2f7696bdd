"""Every paged listing of the admin API pages the same way: an opaque cursor
(``next_cursor``/``nextCursor``) continues strictly after the last item, every item
comes exactly once and in the listing's order, and a cursor the listing did not
make -- garbage, another listing's, a time outside the database's years, an id
that cannot be one, too long, nested too deep -- is a 422 naming ``cursor``, with
the standard error body. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from issuer.admin.http import encode_cursor
from tests.admin.conftest import Admin
from tests.conftest import store_independent

MALFORMED = {"error": "invalid_request", "error_description": "The request body is invalid",
             "details": {"errors": [{"field": "cursor", "message": "malformed"}]}}


@dataclass(frozen=True)
class Listing:
    path: str
    next_field: str
    #: The item's identity, and the sort key it is listed by (as the listing shows it).
    identity: Callable[[dict[str, Any]], Any]
    order: Callable[[dict[str, Any]], Any]
    descending: bool
    #: A cursor of the right shape for the listing, but of the other listings' kind.
    foreign_cursor: str


LISTINGS = {
    "tenants": Listing("/api/v1/tenants", "next_cursor", lambda item: item["tenant_id"],
                       lambda item: (item["created_at"], item["tenant_id"]), False,
                       encode_cursor(7)),
    "clients": Listing("/api/v1/clients", "next_cursor", lambda item: item["client_id"],
                       lambda item: (item["created_at"], item["client_id"]), False,
                       encode_cursor(7)),
    "tokens": Listing("/auth/m2m/tokens", "nextCursor", lambda item: item["jti"],
                      lambda item: (item["issuedAt"], item["jti"]), True, encode_cursor(7)),
    "audit-events": Listing("/api/v1/audit-events", "next_cursor", lambda item: item["id"],
                            lambda item: item["id"], True,
                            encode_cursor("2026-01-01T00:00:00+00:00", "m2m_x")),
}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Cursors malformed in themselves: refused when decoded, whatever the store.
MALFORMED_CURSORS = {
    "not base64": "%%%",
    "not JSON": _b64(b"{not json"),
    "not an array": _b64(b'{"a": 1}'),
    "empty array": encode_cursor(),
    "nested too deep": _b64(b"[" * 5000),
    "too long": "A" * 600,
    "a time without its zone": encode_cursor("2026-01-01T00:00:00", "m2m_x"),
    "a negative number": encode_cursor(-1),
    "a boolean": encode_cursor(True),
    "too many values": encode_cursor("2026-01-01T00:00:00+00:00", "m2m_x", 3),
}
#: Cursors well formed but holding what a store cannot hold (PostgreSQL's timestamp
#: years and bigint, text without NUL): refused before either store is asked.
OUT_OF_RANGE_CURSORS = {
    "a time outside the database's years": encode_cursor("9999-12-31T23:59:59-01:00", "m2m_x"),
    "a time before year 1 in UTC": encode_cursor("0001-01-01T00:00:00+14:00", "m2m_x"),
    "an id with a NUL": encode_cursor("2026-01-01T00:00:00+00:00", "m2m\u0000"),
    "a number beyond 64 bits": encode_cursor(2**63),
}


@pytest.fixture
def populate(client, register, platform, clock) -> Callable[[], Awaitable[None]]:
    """Seven tenants, each with a client, each client with two minted tokens; several
    in the same second, so that ties are broken by the id (and every step is audited)."""

    async def run() -> None:
        for number in range(7):
            registered = await register(tenant=f"tenant-{number}")
            for _ in range(2):
                minted = await client.post("/auth/m2m/token", headers=platform.headers, json={
                    "clientId": registered.client_id, "tenantId": registered.tenant_id})
                assert minted.status_code == 200, minted.text
            if number % 3 == 2:
                clock.advance(1)

    return run


async def _pages(client, admin: Admin, listing: Listing, limit: int) -> list[list[dict]]:
    pages: list[list[dict]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get(listing.path, params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        pages.append(body["items"])
        cursor = body[listing.next_field]
        if cursor is None:
            return pages


@pytest.mark.parametrize("name", list(LISTINGS))
async def test_paging_with_the_cursor_returns_every_item_once_in_order(client, platform,
                                                                       populate, name):
    await populate()
    listing = LISTINGS[name]
    everything = await client.get(listing.path, params={"limit": "200"},
                                  headers=platform.headers)
    assert everything.status_code == 200
    assert everything.json()[listing.next_field] is None
    expected = everything.json()["items"]
    assert len(expected) >= 7
    keys = [listing.order(item) for item in expected]
    assert keys == sorted(keys, reverse=listing.descending)
    assert len(set(keys)) == len(keys)  # the sort key is unique: the position is exact

    pages = await _pages(client, platform, listing, limit=3)
    seen = [listing.identity(item) for page in pages for item in page]
    assert seen == [listing.identity(item) for item in expected]
    assert len(pages) == -(-len(expected) // 3)  # no empty last page


@store_independent
@pytest.mark.parametrize("name", list(LISTINGS))
@pytest.mark.parametrize("cursor", list(MALFORMED_CURSORS.values()), ids=list(MALFORMED_CURSORS))
async def test_a_malformed_cursor_is_422_naming_it(client, platform, name, cursor):
    await _assert_refused_cursor(client, platform, name, cursor)


@pytest.mark.parametrize("name", list(LISTINGS))
@pytest.mark.parametrize("cursor", list(OUT_OF_RANGE_CURSORS.values()),
                         ids=list(OUT_OF_RANGE_CURSORS))
async def test_a_cursor_out_of_the_stores_range_is_422_naming_it(client, platform, name,
                                                                 cursor):
    await _assert_refused_cursor(client, platform, name, cursor)


async def _assert_refused_cursor(client: Any, platform: Admin, name: str, cursor: str) -> None:
    response = await client.get(LISTINGS[name].path, params={"cursor": cursor},
                                headers=platform.headers)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert {"field": "cursor", "message": "malformed"} in body["details"]["errors"] or (
        # the query models of two listings bound the parameter's length themselves
        len(cursor) > 512 and [e["field"] for e in body["details"]["errors"]] == ["cursor"])


@pytest.mark.parametrize("name", list(LISTINGS))
async def test_another_listings_cursor_is_422(client, platform, name):
    listing = LISTINGS[name]
    response = await client.get(listing.path, params={"cursor": listing.foreign_cursor},
                                headers=platform.headers)
    assert response.status_code == 422
    assert response.json() == MALFORMED
