"""Fixtures that give each test its own slice of the real services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest

from tests.support import services


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A database URL whose connections use a fresh schema, dropped after the test."""
    import psycopg

    base = services.require_postgres()
    schema = services.unique_name("t")
    try:
        conn = await psycopg.AsyncConnection.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        services.unavailable(f"PostgreSQL: {error}")
    async with conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def valkey_url() -> str:
    return services.require_valkey()


@pytest.fixture
def key_prefix() -> str:
    """A Valkey key prefix (or queue-name prefix) no other test uses."""
    return services.unique_name("pictor_test") + ":"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A local S3 (moto) server on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A fresh, empty bucket on the moto server."""
    import boto3

    name = services.unique_name("bucket").replace("_", "-")
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name
