"""Look-alike tenant names: with ``acme`` present, no name that reads as ``acme`` is a
second tenant -- through the admin API and ``issuer tenants create``, on SQLite and
PostgreSQL (the database's unique key column decides)."""

from __future__ import annotations

import pytest

from tests.admin.test_tenants_api import invalid_body
from tests.test_cli import issuer

TENANTS = "/api/v1/tenants"


def conflict(taken: str, name: str) -> dict[str, str]:
    return {"error": "conflict",
            "error_description": f"a tenant named {taken!r} exists already, and {name!r} "
                                 "is the same name"}


def refused(message: str) -> dict[str, object]:
    return invalid_body(("name", f"Value error, a tenant name may not {message}"))


@pytest.fixture
async def acme(client, platform) -> dict[str, str]:
    response = await client.post(TENANTS, json={"name": "acme"}, headers=platform.headers)
    assert response.status_code == 201
    created: dict[str, str] = response.json()
    return created


LOOK_ALIKES = [
    ("ACME", 409, conflict("acme", "ACME")),
    ("\uff41\uff43\uff4d\uff45", 409, conflict("acme", "\uff41\uff43\uff4d\uff45")),  # full width
    ("a\u0301cme", 409, conflict("acme", "a\u0301cme")),     # a + combining acute accent
    ("\u00e1cme", 409, conflict("acme", "\u00e1cme")),       # precomposed
    ("  acme  ", 409, {"error": "conflict",
                       "error_description": "a tenant named 'acme' exists already"}),
    ("\u0430cme", 422, refused("mix scripts (Cyrillic, Latin)")),   # Cyrillic a
    ("acme\u200b", 422, refused("hold invisible or control characters (U+200B)")),
    ("\ufeffacme", 422, refused("hold invisible or control characters (U+FEFF)")),
    ("\u202eemca", 422, refused("hold invisible or control characters (U+202E)")),
    ("ac\u2066me", 422, refused("hold invisible or control characters (U+2066)")),
    ("acme\u3164", 422, refused("hold invisible or control characters (U+3164)")),
]


async def test_a_look_alike_of_an_existing_tenant_name_is_refused(client, platform, acme):
    for name, status, body in LOOK_ALIKES:
        response = await client.post(TENANTS, json={"name": name}, headers=platform.headers)
        assert (name, response.status_code, response.json()) == (name, status, body)
    listed = await client.get(TENANTS, headers=platform.headers)
    assert sorted(tenant["name"] for tenant in listed.json()["items"]) == ["acme", "default"]


async def test_renaming_a_tenant_to_a_look_alike_is_refused(client, platform, acme):
    globex = (await client.post(TENANTS, json={"name": "globex"},
                                headers=platform.headers)).json()
    response = await client.patch(f"{TENANTS}/{globex['tenant_id']}", json={"name": "Acme"},
                                  headers=platform.headers)
    assert (response.status_code, response.json()) == (409, conflict("acme", "Acme"))
    # A tenant may change the case of its own name.
    own = await client.patch(f"{TENANTS}/{acme['tenant_id']}", json={"name": "ACME"},
                             headers=platform.headers)
    assert (own.status_code, own.json()["name"]) == (200, "ACME")


async def test_names_in_one_script_or_an_allowed_mix_are_accepted(client, platform, acme):
    for name in ("株式会社トヨタ", "Acme 株式会社", "Müller GmbH", "Ελλάδα", "acme-2",
                 "ACME Corp."):
        response = await client.post(TENANTS, json={"name": name}, headers=platform.headers)
        assert (response.status_code, response.json()["name"]) == (201, name)


async def test_the_cli_refuses_look_alikes_too(client, acme, database_url, tmp_path):
    taken = issuer("tenants", "create", "ACME", database_url=database_url, cwd=tmp_path)
    assert (taken.returncode, taken.stderr) == (
        1, "issuer: error: a tenant named 'acme' exists already, and 'ACME' is the same name\n")
    mixed = issuer("tenants", "create", "\u0430cme", database_url=database_url, cwd=tmp_path)
    assert (mixed.returncode, mixed.stderr) == (
        1, "issuer: error: a tenant name may not mix scripts (Cyrillic, Latin)\n")
    invisible = issuer("tenants", "create", "globex\u200b", database_url=database_url,
                       cwd=tmp_path)
    assert (invisible.returncode, invisible.stderr) == (
        1, "issuer: error: a tenant name may not hold invisible or control characters "
           "(U+200B)\n")
    # A name is found by its key, as it is compared.
    found = issuer("clients", "create", "--tenant", "\uff21\uff23\uff2d\uff25", "--scope",
                   "a", "--json", database_url=database_url, cwd=tmp_path)
    assert found.returncode == 0, found.stderr


async def test_the_database_refuses_a_second_row_with_the_same_key(engine, acme):
    """Not only the application's check: two writers racing past it still collide."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    from issuer.store.models import Tenant

    now = datetime.now(UTC)
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(Tenant.__table__.insert(), [{
                "id": "00000000-0000-0000-0000-000000000001", "name": "Acme",
                "name_key": "acme", "status": "active", "platform": False,
                "created_at": now, "updated_at": now}])
