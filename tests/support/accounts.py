"""HTTP steps the accounts tests share."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

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
