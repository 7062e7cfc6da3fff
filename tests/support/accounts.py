"""HTTP steps the accounts tests share."""

from __future__ import annotations

from typing import Any

import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from core.accounts.context import Caller
from core.accounts.users import Role
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.use_cases import registration_from

PASSWORD = "correct horse battery staple"


async def register(client: AsyncTestClient[Litestar], email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def login(client: AsyncTestClient[Litestar], email: str, password: str = PASSWORD) -> str:
    response = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # tests choose their credential explicitly
    return str(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_session(
    client: AsyncTestClient[Litestar], email: str, *, display_name: str | None = None
) -> str:
    """A session token of a new, verified administrator (registered through the use case: the API
    makes no admins)."""
    async with svcs.Container(registry_of(client.app)) as container:
        registration = await registration_from(container)
        await registration.register(
            email=email,
            password=PASSWORD,
            display_name=display_name,
            caller=Caller(),
            role=Role.ADMIN,
            email_verified=True,
        )
    return await login(client, email)
