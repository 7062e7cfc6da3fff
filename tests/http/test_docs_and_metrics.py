from tests.http.conftest import METRICS_TOKEN


async def test_openapi_document_is_served(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Pictor"
    assert "/health/ready" in document["paths"]
    assert "/metrics" not in document["paths"]


async def test_docs_work_without_a_cdn(client):
    redirect = await client.get("/docs", follow_redirects=False)
    assert redirect.status_code in (301, 302, 307, 308)
    page = await client.get("/docs", follow_redirects=True)
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    asset = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000


async def test_metrics_need_the_bearer_token(client):
    missing = await client.get("/metrics")
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_metrics_count_requests_by_route_template(client):
    await client.get("/health/live")
    await client.get("/problems/not_found")
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    text = response.text
    assert "pictor_http_requests_total" in text
    assert 'route="/problems/{code}"' in text
    assert "/problems/not_found" not in text
    await client.get("/no/such/page")
    text = (await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).text
    assert 'pictor_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert "/no/such/page" not in text


async def test_unknown_methods_do_not_create_metric_series(client):
    for n in range(3):
        await client.request(f"M{n}XYZ", "/health/live")
    text = (await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).text
    assert "M0XYZ" not in text
    assert 'method="OTHER"' in text
