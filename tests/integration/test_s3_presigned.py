"""The S3 adapter against a local S3 (moto), checked with clients we did not write: boto3 and
plain HTTP. Whatever Pictor stores must look right to them, and the reverse.

moto does not check request signatures (a tampered presigned URL still downloads), so nothing
here claims it refuses one; that check belongs to real S3.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import obstore.exceptions
import pytest

from adapters.memory.clock import ManualClock
from adapters.storage.factory import blob_store_from_url
from core.errors import BlobNotFound
from core.ports import BlobStore
from core.secrets import SecretVersion

pytestmark = pytest.mark.services

PREFIX = "tenant-a/blobs"


class NoSecrets:
    """S3 presigns with its own credentials: the URL signing key must never be asked for."""

    async def current(self, name: str) -> SecretVersion:
        raise AssertionError(f"S3 links must not use the {name} secret")

    async def versions(self, name: str) -> list[SecretVersion]:
        raise AssertionError(f"S3 links must not use the {name} secret")

    async def ping(self) -> None:
        return None


@pytest.fixture
def boto(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


@pytest.fixture
def store(moto_endpoint: str, s3_bucket: str) -> BlobStore:
    return blob_store_from_url(
        f"s3://{s3_bucket}/{PREFIX}",
        secrets=NoSecrets(),
        clock=ManualClock(datetime.now(UTC)),
        public_base_url="https://unused.test",
        s3_endpoint=moto_endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_allow_http=True,
    )


async def test_boto3_reads_what_the_adapter_wrote_under_the_prefix(
    store: BlobStore, boto: Any, s3_bucket: str
) -> None:
    await store.put(
        "gen/1.png", b"\x89PNG", content_type="image/png", metadata={"owner": "u-1", "seed": "42"}
    )

    found = boto.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/gen/1.png")

    assert found["Body"].read() == b"\x89PNG"
    assert found["ContentType"] == "image/png"
    assert found["Metadata"] == {"owner": "u-1", "seed": "42"}
    listed = boto.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"{PREFIX}/gen/1.png"]


async def test_adapter_reads_what_boto3_wrote(store: BlobStore, boto: Any, s3_bucket: str) -> None:
    boto.put_object(
        Bucket=s3_bucket,
        Key=f"{PREFIX}/up/photo.jpg",
        Body=b"jpeg bytes",
        ContentType="image/jpeg",
        Metadata={"source": "upload"},
    )
    boto.put_object(Bucket=s3_bucket, Key="outside/the/prefix.txt", Body=b"not ours")

    blob = await store.get("up/photo.jpg")

    assert blob.data == b"jpeg bytes"
    assert (blob.info.content_type, blob.info.metadata) == ("image/jpeg", {"source": "upload"})
    assert [info.key for info in await store.list()] == ["up/photo.jpg"]
    with pytest.raises(BlobNotFound):
        await store.head("outside/the/prefix.txt")  # resolved under the prefix, so absent


async def test_copy_is_seen_by_boto3_with_content_type_and_metadata(
    store: BlobStore, boto: Any, s3_bucket: str
) -> None:
    await store.put("a.webp", b"webp", content_type="image/webp", metadata={"owner": "u-2"})

    await store.copy("a.webp", "copies/a.webp")

    found = boto.head_object(Bucket=s3_bucket, Key=f"{PREFIX}/copies/a.webp")
    assert (found["ContentType"], found["Metadata"]) == ("image/webp", {"owner": "u-2"})


async def test_delete_is_seen_by_boto3(store: BlobStore, boto: Any, s3_bucket: str) -> None:
    await store.put("gone.txt", b"x", content_type="text/plain")

    await store.delete("gone.txt")

    assert boto.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


async def test_presigned_url_serves_the_object_over_plain_http(store: BlobStore, s3_bucket: str) -> None:
    key = "gen/ça va/#1 +x.png"
    await store.put(key, b"\x89PNG presigned", content_type="image/png")

    signed = await store.signed_url(key, expires_in=timedelta(minutes=10))

    parts = urlsplit(signed.url)
    assert parts.path == f"/{s3_bucket}/{PREFIX}/gen/%C3%A7a%20va/%231%20%2Bx.png"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    async with httpx.AsyncClient() as client:
        response = await client.get(signed.url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG presigned"
    assert response.headers["content-type"] == "image/png"


async def test_presigned_url_of_a_missing_object_is_not_found(store: BlobStore) -> None:
    signed = await store.signed_url("never/stored.png", expires_in=timedelta(minutes=1))

    async with httpx.AsyncClient() as client:
        response = await client.get(signed.url)

    assert response.status_code == 404


async def test_ping_fails_for_a_missing_bucket(moto_endpoint: str) -> None:
    store = blob_store_from_url(
        "s3://no-such-bucket-pictor/x",
        secrets=NoSecrets(),
        clock=ManualClock(datetime.now(UTC)),
        public_base_url="https://unused.test",
        s3_endpoint=moto_endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_allow_http=True,
    )

    with pytest.raises(obstore.exceptions.BaseError, match="NoSuchBucket"):
        await store.ping()
