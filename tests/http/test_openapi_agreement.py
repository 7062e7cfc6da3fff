"""The OpenAPI document and the server agree where schema-driven clients look: request bodies that
refuse unknown fields say `additionalProperties: false`, and OPTIONS lists every method of a path."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.testing import AsyncTestClient


async def test_bodies_that_refuse_unknown_fields_say_so_and_answers_do_not(
    make_app: Callable[..., Litestar],
) -> None:
    async with AsyncTestClient(app=make_app()) as client:
        schemas = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
        refused = await client.post(
            "/v1/auth/register", json={"email": "a@example.com", "password": "x", "extra": 1}
        )
    assert schemas["CreateEndpointBody"]["additionalProperties"] is False
    assert schemas["PlanBody"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["EndpointOut"]  # answers may grow fields
    assert refused.status_code == 422


async def test_options_lists_every_method_of_its_path(make_app: Callable[..., Litestar]) -> None:
    async with AsyncTestClient(app=make_app()) as client:
        allowed = {
            path: (await client.options(path)).headers["allow"]
            for path in ("/v1/generations", "/v1/webhook-endpoints/abc", "/v1/me", "/health/live")
        }
    assert allowed == {
        "/v1/generations": "GET, OPTIONS, POST",
        "/v1/webhook-endpoints/abc": "DELETE, GET, OPTIONS, PATCH",
        "/v1/me": "GET, OPTIONS, PATCH",
        "/health/live": "GET, OPTIONS",
    }
