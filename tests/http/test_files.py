from datetime import timedelta
from urllib.parse import urlsplit

import svcs

from core.ports import BlobStore, SignedLinks
from entrypoints.http.svcs_plugin import registry_of


async def _store_and_signer(client):
    async with svcs.Container(registry_of(client.app)) as container:
        return await container.aget(BlobStore, SignedLinks)


def _local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_a_signed_link_downloads_the_file(client):
    store, _ = await _store_and_signer(client)
    await store.put("generations/u1/g1/0.png", b"\x89PNG-bytes", content_type="image/png")
    link = await store.signed_url("generations/u1/g1/0.png", expires_in=timedelta(minutes=5))
    response = await client.get(_local(link.url))
    assert response.status_code == 200, response.text
    assert response.content == b"\x89PNG-bytes"
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(b"\x89PNG-bytes"))
    head = await client.head(_local(link.url))
    assert head.status_code == 200
    assert head.content == b""


async def test_tampered_links_are_refused(client):
    store, _ = await _store_and_signer(client)
    await store.put("a/secret.png", b"1", content_type="image/png")
    await store.put("a/other.png", b"2", content_type="image/png")
    link = _local((await store.signed_url("a/secret.png", expires_in=timedelta(minutes=5))).url)
    for tampered in (link.replace("secret.png", "other.png"), link[:-2] + "AA", link.split("&sig=")[0]):
        response = await client.get(tampered)
        assert response.status_code == 403, tampered
        assert response.json()["code"] == "invalid_signature"


async def test_expired_links_are_refused(client):
    store, signer = await _store_and_signer(client)
    await store.put("a/old.png", b"1", content_type="image/png")
    link = await signer.sign("a/old.png", expires_in=timedelta(seconds=-1))
    response = await client.get(_local(link.url))
    assert response.status_code == 403
    assert response.json()["code"] == "link_expired"


async def test_a_valid_link_to_a_deleted_file_is_404(client):
    store, _ = await _store_and_signer(client)
    await store.put("a/gone.png", b"1", content_type="image/png")
    link = await store.signed_url("a/gone.png", expires_in=timedelta(minutes=5))
    await store.delete("a/gone.png")
    response = await client.get(_local(link.url))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
