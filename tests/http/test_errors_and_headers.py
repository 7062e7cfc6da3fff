import msgspec
from litestar import get, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from core.errors import DomainError, ErrorCode

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code", "correlation_id"}


class Widget(msgspec.Struct):
    name: str
    size: int


@post("/test/widgets", sync_to_thread=False)
def create_widget(data: JSONBody[Widget]) -> Widget:
    return data


@get("/test/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("database password is hunter2")


@get("/test/conflict", sync_to_thread=False)
def conflict() -> None:
    raise DomainError(ErrorCode.INVALID_STATE, "The generation already finished", generation_id="g1")


def assert_problem(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"/problems/{code}"
    assert body["correlation_id"] == response.headers["x-request-id"]
    return body


async def make_client(make_app):
    app = make_app()
    for handler in (create_widget, boom, conflict):
        app.register(handler)
    return AsyncTestClient(app=app)


async def test_unknown_route_is_a_404_problem(client):
    body = assert_problem(await client.get("/nowhere"), 404, "not_found")
    assert body["instance"] == "/nowhere"


async def test_wrong_method_is_a_405_problem(client):
    assert_problem(await client.delete("/health/live"), 405, "method_not_allowed")


async def test_validation_errors_list_the_fields(make_app):
    async with await make_client(make_app) as client:
        response = await client.post("/test/widgets", json={"name": "x", "size": "big"})
        body = assert_problem(response, 422, "validation_failed")
        assert body["errors"], body
        assert {"field", "message", "code"} <= set(body["errors"][0])
        assert "size" in body["errors"][0]["field"] or "size" in body["errors"][0]["message"]

        malformed = await client.post(
            "/test/widgets", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_problem(malformed, 400, "bad_request")


async def test_domain_errors_keep_their_code_and_context(make_app):
    async with await make_client(make_app) as client:
        body = assert_problem(await client.get("/test/conflict"), 409, "invalid_state")
    assert body["detail"] == "The generation already finished"
    assert body["generation_id"] == "g1"


async def test_unexpected_exceptions_leak_nothing(make_app, caplog):
    async with await make_client(make_app) as client:
        response = await client.get("/test/boom", headers={"X-Request-ID": "trace-me-1"})
    body = assert_problem(response, 500, "internal_error")
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert body["correlation_id"] == "trace-me-1"
    assert any("unhandled exception" in r.getMessage() for r in caplog.records)


async def test_request_ids_are_echoed_when_safe_and_replaced_when_not(client):
    kept = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = await client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert replaced.headers["x-request-id"] not in ("", "bad id with spaces")
    generated = await client.get("/health/live")
    assert len(generated.headers["x-request-id"]) >= 16


async def test_security_headers_on_every_response(client):
    for response in (await client.get("/health/live"), await client.get("/nowhere")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_problem_types_are_documented(client):
    listing = (await client.get("/problems")).json()["data"]
    assert len(listing) == len(ErrorCode)
    one = (await client.get("/problems/quota_exceeded")).json()
    assert one == {"code": "quota_exceeded", "status": 402, "category": "limit", "title": "Quota exceeded"}
    assert_problem(await client.get("/problems/nope"), 404, "not_found")
