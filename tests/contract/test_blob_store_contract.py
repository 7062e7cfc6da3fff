"""The BlobStore contract, run against every adapter: the in-memory fake and obstore on memory://,
file:// and s3:// (a local moto server, under a key prefix).

The stores that cannot presign sign HMAC links served by `/v1/files/{key}`; here that route is
played by `LinkSigner.verify` followed by `stream`, exactly what the HTTP handler does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from adapters.memory.blob_store import MemoryBlobStore
from adapters.memory.clock import ManualClock
from adapters.memory.secrets import MemorySecrets
from adapters.storage.factory import blob_store_from_url
from adapters.storage.link_signer import LinkSigner
from core.errors import BlobNotFound, DomainError, ErrorCode
from core.ports import BlobStore
from core.secrets import URL_SIGNING_KEY

PUBLIC_BASE_URL = "https://pictor.test"
START = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Subject:
    """A store under test, with what the test needs to drive and observe it."""

    store: BlobStore
    clock: ManualClock
    secrets: MemorySecrets
    signer: LinkSigner | None  # None: the store presigns (S3)


ADAPTERS = [
    "memory-fake",
    "obstore-memory",
    "obstore-file",
    pytest.param("obstore-s3", marks=pytest.mark.services),
]
HMAC_ADAPTERS = ["memory-fake", "obstore-memory", "obstore-file"]


def make_subject(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    clock = ManualClock(START)
    secrets = MemorySecrets({URL_SIGNING_KEY: ["first signing key"]})
    signer = LinkSigner(secrets, clock, PUBLIC_BASE_URL)

    def from_url(url: str, **s3_settings: Any) -> BlobStore:
        return blob_store_from_url(
            url, secrets=secrets, clock=clock, public_base_url=PUBLIC_BASE_URL, **s3_settings
        )

    if kind == "memory-fake":
        return Subject(MemoryBlobStore(clock=clock, link_signer=signer), clock, secrets, signer)
    if kind == "obstore-memory":
        return Subject(from_url("memory://"), clock, secrets, signer)
    if kind == "obstore-file":
        root = tmp_path / "blobs" / "root"  # not created: the factory must create it
        return Subject(from_url(root.as_uri()), clock, secrets, signer)
    assert kind == "obstore-s3"
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    store = from_url(
        f"s3://{bucket}/pfx",
        s3_endpoint=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_allow_http=True,
    )
    return Subject(store, clock, secrets, None)


@pytest.fixture(params=ADAPTERS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return make_subject(request.param, request, tmp_path)


@pytest.fixture(params=HMAC_ADAPTERS)
def hmac_subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return make_subject(request.param, request, tmp_path)


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def download(subject: Subject, url: str) -> bytes:
    """Fetch a signed URL the way a client would: plain HTTP for S3, our route for the others."""
    if subject.signer is None:
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        response.raise_for_status()
        return response.content
    key, query = parse_link(url)
    await subject.signer.verify(key, query.get("expires"), query.get("kid"), query.get("sig"))
    return b"".join(await collect(subject.store.stream(key)))


def parse_link(url: str) -> tuple[str, dict[str, str]]:
    """The key and query of a `/v1/files/` link, decoded as the HTTP route decodes them."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_BASE_URL
    assert parts.path.startswith("/v1/files/")
    key = "/".join(unquote(segment) for segment in parts.path.removeprefix("/v1/files/").split("/"))
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    return key, query


# --- put, get, head ----------------------------------------------------------------------------


async def test_put_then_get_round_trips_bytes_content_type_and_metadata(subject: Subject) -> None:
    data = bytes(range(256)) * 10
    metadata = {"owner": "user-1", "generation-id": "0192f5a0-7c1e", "note": "a b  c"}

    stored = await subject.store.put("images/u1/cat.png", data, content_type="image/png", metadata=metadata)
    blob = await subject.store.get("images/u1/cat.png")

    assert blob.data == data
    assert blob.info.key == "images/u1/cat.png"
    assert blob.info.size == len(data)
    assert blob.info.content_type == "image/png"
    assert blob.info.metadata == metadata
    assert (stored.key, stored.size, stored.content_type, stored.metadata) == (
        "images/u1/cat.png",
        len(data),
        "image/png",
        metadata,
    )
    assert stored.etag == blob.info.etag


async def test_put_without_metadata_gives_empty_metadata(subject: Subject) -> None:
    await subject.store.put("a.txt", b"", content_type="text/plain")

    blob = await subject.store.get("a.txt")

    assert blob.data == b""
    assert blob.info.size == 0
    assert blob.info.content_type == "text/plain"
    assert blob.info.metadata == {}


async def test_put_overwrites_bytes_content_type_and_metadata(subject: Subject) -> None:
    await subject.store.put("k", b"first", content_type="text/plain", metadata={"a": "1", "b": "2"})

    await subject.store.put("k", b"second!", content_type="image/webp", metadata={"b": "3"})

    blob = await subject.store.get("k")
    assert blob.data == b"second!"
    assert blob.info.content_type == "image/webp"
    assert blob.info.metadata == {"b": "3"}  # replaced, not merged
    assert [info.key for info in await subject.store.list()] == ["k"]


async def test_head_describes_the_object_without_its_bytes(subject: Subject) -> None:
    stored = await subject.store.put(
        "docs/report.pdf", b"%PDF-1.7", content_type="application/pdf", metadata={"pages": "1"}
    )

    info = await subject.store.head("docs/report.pdf")

    assert info.key == "docs/report.pdf"
    assert info.size == 8
    assert info.content_type == "application/pdf"
    assert info.metadata == {"pages": "1"}
    assert info.etag == stored.etag
    assert info.last_modified.tzinfo is not None


async def test_keys_with_spaces_unicode_and_url_characters_round_trip(subject: Subject) -> None:
    keys = ["dir/ça va%20?.png", "dir/#hash&amp=1+2", "dir/~tilde;x=y"]
    for number, key in enumerate(keys):
        await subject.store.put(key, f"data {number}".encode(), content_type="text/plain")

    assert [(await subject.store.get(key)).data for key in keys] == [b"data 0", b"data 1", b"data 2"]
    assert [info.key for info in await subject.store.list("dir/")] == sorted(keys)


async def test_stream_yields_the_bytes_in_chunks_no_larger_than_asked(subject: Subject) -> None:
    data = bytes(range(251)) * 1200  # 301 200 bytes, not a multiple of the chunk size
    await subject.store.put("big.bin", data, content_type="application/octet-stream")

    chunks = await collect(subject.store.stream("big.bin", chunk_size=64 * 1024))

    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= 64 * 1024 for chunk in chunks)


# --- missing keys --------------------------------------------------------------------------------


MISSING_KEY_OPERATIONS: dict[str, Callable[[BlobStore], Awaitable[object]]] = {
    "get": lambda store: store.get("absent/key"),
    "head": lambda store: store.head("absent/key"),
    "stream": lambda store: collect(store.stream("absent/key")),
    "copy": lambda store: store.copy("absent/key", "elsewhere"),
}


@pytest.mark.parametrize("operation", MISSING_KEY_OPERATIONS)
async def test_missing_key_raises_blob_not_found(subject: Subject, operation: str) -> None:
    await subject.store.put("present", b"x", content_type="text/plain")
    store = subject.store

    with pytest.raises(BlobNotFound) as raised:
        await MISSING_KEY_OPERATIONS[operation](store)

    assert raised.value.code is ErrorCode.NOT_FOUND
    assert raised.value.context == {"key": "absent/key"}
    assert [info.key for info in await store.list()] == ["present"]


async def test_a_key_below_an_object_is_missing(subject: Subject) -> None:
    await subject.store.put("a", b"file", content_type="text/plain")

    for read in (subject.store.get("a/b"), subject.store.head("a/b"), subject.store.copy("a/b", "z")):
        with pytest.raises(BlobNotFound):
            await read
    await subject.store.delete("a/b")
    assert [info.key for info in await subject.store.list()] == ["a"]


async def test_a_key_above_objects_is_missing(subject: Subject) -> None:
    await subject.store.put("d/e", b"file", content_type="text/plain")

    for read in (subject.store.get("d"), subject.store.head("d"), collect(subject.store.stream("d"))):
        with pytest.raises(BlobNotFound):
            await read
    await subject.store.delete("d")
    assert [info.key for info in await subject.store.list()] == ["d/e"]


# --- delete, copy ---------------------------------------------------------------------------------


async def test_delete_removes_the_object_and_is_idempotent(subject: Subject) -> None:
    await subject.store.put("a/1", b"one", content_type="text/plain", metadata={"k": "v"})
    await subject.store.put("a/2", b"two", content_type="text/plain")

    await subject.store.delete("a/1")
    await subject.store.delete("a/1")
    await subject.store.delete("never/existed")

    with pytest.raises(BlobNotFound):
        await subject.store.head("a/1")
    assert [info.key for info in await subject.store.list()] == ["a/2"]


async def test_put_after_delete_does_not_resurrect_old_metadata(subject: Subject) -> None:
    await subject.store.put("k", b"old", content_type="image/png", metadata={"old": "yes"})
    await subject.store.delete("k")

    await subject.store.put("k", b"new", content_type="text/plain")

    assert (await subject.store.head("k")).metadata == {}


async def test_copy_keeps_bytes_content_type_and_metadata(subject: Subject) -> None:
    await subject.store.put("src/a.png", b"pixels", content_type="image/png", metadata={"owner": "u1"})
    await subject.store.put("dst/a.png", b"to be replaced", content_type="text/plain", metadata={"x": "y"})

    await subject.store.copy("src/a.png", "dst/a.png")

    copied = await subject.store.get("dst/a.png")
    assert copied.data == b"pixels"
    assert copied.info.content_type == "image/png"
    assert copied.info.metadata == {"owner": "u1"}
    source = await subject.store.get("src/a.png")
    assert (source.data, source.info.metadata) == (b"pixels", {"owner": "u1"})


async def test_copy_onto_itself_keeps_the_object(subject: Subject) -> None:
    await subject.store.put("same", b"data", content_type="image/png", metadata={"m": "1"})

    await subject.store.copy("same", "same")

    blob = await subject.store.get("same")
    assert (blob.data, blob.info.content_type, blob.info.metadata) == (b"data", "image/png", {"m": "1"})


# --- list -----------------------------------------------------------------------------------------


async def test_list_filters_by_text_prefix_and_orders_by_key(subject: Subject) -> None:
    keys = ["b/2.png", "a/2.png", "a/10.png", "ab.png", "a.png", "a/1.png", "a/sub/x.png"]
    for key in keys:
        await subject.store.put(key, key.encode(), content_type="image/png", metadata={"name": key[:1]})

    assert [i.key for i in await subject.store.list()] == sorted(keys)
    assert [i.key for i in await subject.store.list("a/")] == [
        "a/1.png",
        "a/10.png",
        "a/2.png",
        "a/sub/x.png",
    ]
    assert [i.key for i in await subject.store.list("a")] == [
        "a.png",
        "a/1.png",
        "a/10.png",
        "a/2.png",
        "a/sub/x.png",
        "ab.png",
    ]
    assert [i.key for i in await subject.store.list("a/1")] == ["a/1.png", "a/10.png"]
    assert [i.key for i in await subject.store.list("a/sub/")] == ["a/sub/x.png"]
    assert await subject.store.list("zzz") == []
    assert await subject.store.list("c/") == []


async def test_list_describes_each_object(subject: Subject) -> None:
    await subject.store.put("p/one.png", b"1", content_type="image/png", metadata={"n": "1"})
    await subject.store.put("p/two.txt", b"22", content_type="text/plain")

    listed = await subject.store.list("p/")

    assert [(i.key, i.size, i.content_type, i.metadata) for i in listed] == [
        ("p/one.png", 1, "image/png", {"n": "1"}),
        ("p/two.txt", 2, "text/plain", {}),
    ]
    assert listed[0].etag == (await subject.store.head("p/one.png")).etag


async def test_list_of_an_empty_store_is_empty(subject: Subject) -> None:
    assert await subject.store.list() == []


# --- validation -----------------------------------------------------------------------------------

INVALID_KEYS = ["", "../a", "a/../../b", "/a", "a//b", "a/./b", "a/", "a\\b", "nul\x00", ".meta/x", "up#12"]


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_are_rejected_by_every_operation(
    subject: Subject, key: str, tmp_path: Path
) -> None:
    store = subject.store
    await store.put("ok", b"x", content_type="text/plain")
    attempts = [
        store.put(key, b"escape", content_type="text/plain"),
        store.get(key),
        store.head(key),
        store.delete(key),
        store.copy("ok", key),
        store.copy(key, "ok2"),
        store.signed_url(key, expires_in=timedelta(minutes=1)),
    ]
    for attempt in attempts:
        with pytest.raises(DomainError) as raised:
            await attempt
        assert raised.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(DomainError) as raised:
        store.stream(key)
    assert raised.value.code is ErrorCode.BAD_REQUEST

    assert [info.key for info in await store.list()] == ["ok"]
    assert not (tmp_path / "blobs" / "a").exists()  # `../a` never escaped the file store's root


@pytest.mark.parametrize("prefix", ["../", "/a", "a//", "../../etc/", ".meta/"])
async def test_invalid_list_prefixes_are_rejected(subject: Subject, prefix: str) -> None:
    with pytest.raises(DomainError) as raised:
        await subject.store.list(prefix)
    assert raised.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "metadata",
    [
        {"Owner": "upper-case name"},
        {"has space": "x"},
        {"content-type": "text/html"},
        {"cache-control": "no-store"},
        {"note": "caf\u00e9"},
        {"note": " padded"},
        {"note": "line\nbreak"},
        {"big": "x" * 3000},
    ],
)
async def test_metadata_that_a_store_would_alter_is_rejected(
    subject: Subject, metadata: dict[str, str]
) -> None:
    with pytest.raises(DomainError) as raised:
        await subject.store.put("k", b"x", content_type="text/plain", metadata=metadata)
    assert raised.value.code is ErrorCode.BAD_REQUEST
    assert await subject.store.list() == []


@pytest.mark.parametrize("content_type", ["", " image/png", "image/p\u00e9g", "text/plain\r\nx: y"])
async def test_invalid_content_types_are_rejected(subject: Subject, content_type: str) -> None:
    with pytest.raises(DomainError) as raised:
        await subject.store.put("k", b"x", content_type=content_type)
    assert raised.value.code is ErrorCode.BAD_REQUEST


async def test_non_positive_expiry_is_rejected(subject: Subject) -> None:
    await subject.store.put("k", b"x", content_type="text/plain")
    with pytest.raises(ValueError):
        await subject.store.signed_url("k", expires_in=timedelta(0))


# --- signed URLs ---------------------------------------------------------------------------------


async def test_signed_url_downloads_the_object(subject: Subject) -> None:
    key = "gen/ça va%/image #1.png"
    await subject.store.put(key, b"\x89PNG signed", content_type="image/png")

    signed = await subject.store.signed_url(key, expires_in=timedelta(minutes=5))

    assert signed.expires_at == START + timedelta(minutes=5)
    assert await download(subject, signed.url) == b"\x89PNG signed"


async def test_hmac_link_encodes_each_key_segment(hmac_subject: Subject) -> None:
    key = "gen/ça va%/a?b#c"
    await hmac_subject.store.put(key, b"x", content_type="text/plain")

    signed = await hmac_subject.store.signed_url(key, expires_in=timedelta(minutes=5))

    parts = urlsplit(signed.url)
    assert parts.path == "/v1/files/gen/%C3%A7a%20va%25/a%3Fb%23c"
    assert parse_link(signed.url)[0] == key
    assert set(parse_qs(parts.query)) == {"expires", "kid", "sig"}


@pytest.mark.parametrize("tamper", ["key", "sig", "expires", "kid-and-sig", "missing-sig"])
async def test_tampered_hmac_link_is_refused(hmac_subject: Subject, tamper: str) -> None:
    await hmac_subject.store.put("a/b.png", b"x", content_type="image/png")
    await hmac_subject.store.put("a/c.png", b"y", content_type="image/png")
    assert hmac_subject.signer is not None
    key, query = parse_link(
        (await hmac_subject.store.signed_url("a/b.png", expires_in=timedelta(hours=1))).url
    )
    if tamper == "key":
        key = "a/c.png"
    elif tamper == "sig":
        query["sig"] = ("A" if query["sig"][0] != "A" else "B") + query["sig"][1:]
    elif tamper == "expires":
        query["expires"] = str(int(query["expires"]) + 86400)
    elif tamper == "kid-and-sig":
        query["kid"] = "v0"
        query["sig"] = query["sig"][::-1]
    else:
        del query["sig"]

    with pytest.raises(DomainError) as raised:
        await hmac_subject.signer.verify(key, query.get("expires"), query.get("kid"), query.get("sig"))

    assert raised.value.code is ErrorCode.INVALID_SIGNATURE


async def test_hmac_link_expires(hmac_subject: Subject) -> None:
    await hmac_subject.store.put("k", b"x", content_type="text/plain")
    signed = await hmac_subject.store.signed_url("k", expires_in=timedelta(minutes=5))
    key, query = parse_link(signed.url)
    assert hmac_subject.signer is not None

    hmac_subject.clock.advance(5 * 60 - 1)
    await hmac_subject.signer.verify(key, query["expires"], query["kid"], query["sig"])
    hmac_subject.clock.advance(1)
    with pytest.raises(DomainError) as raised:
        await hmac_subject.signer.verify(key, query["expires"], query["kid"], query["sig"])

    assert raised.value.code is ErrorCode.LINK_EXPIRED


async def test_link_signer_makes_an_expired_link_from_a_negative_expiry(hmac_subject: Subject) -> None:
    assert hmac_subject.signer is not None
    key, query = parse_link((await hmac_subject.signer.sign("k", timedelta(seconds=-1))).url)

    with pytest.raises(DomainError) as raised:
        await hmac_subject.signer.verify(key, query["expires"], query["kid"], query["sig"])

    assert raised.value.code is ErrorCode.LINK_EXPIRED


async def test_hmac_link_survives_rotation_while_its_key_version_is_listed(hmac_subject: Subject) -> None:
    await hmac_subject.store.put("k", b"x", content_type="text/plain")
    old_link = parse_link((await hmac_subject.store.signed_url("k", expires_in=timedelta(hours=1))).url)
    assert old_link[1]["kid"] == "1"
    signer, secrets = hmac_subject.signer, hmac_subject.secrets
    assert signer is not None

    secrets.rotate(URL_SIGNING_KEY, "second signing key")
    new_link = parse_link((await hmac_subject.store.signed_url("k", expires_in=timedelta(hours=1))).url)
    assert new_link[1]["kid"] == "2"
    for key, query in (old_link, new_link):
        await signer.verify(key, query["expires"], query["kid"], query["sig"])

    secrets.retire(URL_SIGNING_KEY, "1")
    await signer.verify(new_link[0], new_link[1]["expires"], new_link[1]["kid"], new_link[1]["sig"])
    with pytest.raises(DomainError) as raised:
        await signer.verify(old_link[0], old_link[1]["expires"], old_link[1]["kid"], old_link[1]["sig"])
    assert raised.value.code is ErrorCode.INVALID_SIGNATURE


async def test_ping_succeeds_on_a_reachable_store(subject: Subject) -> None:
    await subject.store.ping()


# --- local files only -----------------------------------------------------------------------------


@pytest.fixture
def file_subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return make_subject("obstore-file", request, tmp_path)


async def test_local_files_refuse_a_key_that_would_be_both_file_and_folder(file_subject: Subject) -> None:
    store = file_subject.store
    await store.put("a", b"file", content_type="text/plain")
    await store.put("d/e", b"file", content_type="text/plain")

    for clash in (
        store.put("a/b", b"x", content_type="text/plain"),
        store.put("d", b"x", content_type="text/plain"),
        store.copy("a", "a/b"),
        store.copy("a", "d"),
    ):
        with pytest.raises(DomainError) as raised:
            await clash
        assert raised.value.code is ErrorCode.CONFLICT

    assert [(i.key, i.content_type) for i in await store.list()] == [
        ("a", "text/plain"),
        ("d/e", "text/plain"),
    ]


async def test_local_files_keep_metadata_in_hidden_sidecars(file_subject: Subject, tmp_path: Path) -> None:
    await file_subject.store.put("x/y.png", b"png", content_type="image/png", metadata={"owner": "u1"})

    root = tmp_path / "blobs" / "root"
    assert (root / "x" / "y.png").read_bytes() == b"png"  # the object itself stays a plain file
    assert (root / ".meta" / "x" / "y.png").is_file()
    await file_subject.store.delete("x/y.png")
    assert not (root / ".meta" / "x" / "y.png").exists()
