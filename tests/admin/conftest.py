"""Admin-API fixtures: callers holding an admin token of the platform or of a tenant."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conftest import Registered, issue_token


@dataclass
class Admin:
    client: Registered
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def platform(client, platform_admin) -> Admin:
    admin = await platform_admin()
    return Admin(admin, await issue_token(client, admin, "admin"))


@pytest.fixture
async def acme_admin(client, register) -> Admin:
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    return Admin(admin, await issue_token(client, admin, "admin"))


@pytest.fixture
async def globex_admin(client, register) -> Admin:
    admin = await register(tenant="globex", allowed_scopes=["admin"])
    return Admin(admin, await issue_token(client, admin, "admin"))
