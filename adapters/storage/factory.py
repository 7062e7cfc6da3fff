"""Build the BlobStore named by a storage URL (`PICTOR_STORAGE_URL`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from obstore.store import LocalStore, MemoryStore, S3Store, from_url

from adapters.storage.link_signer import LinkSigner
from adapters.storage.obstore_store import ObstoreBlobStore
from core.ports import BlobStore, Clock, Secrets

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, S3Config


def blob_store_from_url(
    url: str,
    *,
    secrets: Secrets,
    clock: Clock,
    public_base_url: str,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    s3_access_key_id: str | None = None,
    s3_secret_access_key: str | None = None,
    s3_allow_http: bool = False,
    link_signer: LinkSigner | None = None,
) -> BlobStore:
    """The store for `url`, chosen by scheme.

    - `s3://bucket/prefix`: S3 or an S3-compatible service; everything lives under `prefix`.
      With `s3_endpoint` (MinIO, moto, …) requests are path-style. Unset credentials and region
      are left to obstore's own defaults.
    - `gs://bucket/prefix`, `az://account/container/prefix`: obstore's stores from the URL, with
      credentials from their usual environment.
    - `file:///absolute/path`: files under that directory (created if missing).
    - `memory://`: obstore's in-process memory store.

    Stores that cannot presign (files, memory) sign links to `{public_base_url}/v1/files/…` with
    the `url_signing_key` secret (through `link_signer` when given, so the route that serves
    the links can share it).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    store: ObjectStore
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"Storage URL {url!r} names no bucket (expected s3://bucket/prefix)")
        store = _s3_store(
            url,
            endpoint=s3_endpoint,
            region=s3_region,
            access_key_id=s3_access_key_id,
            secret_access_key=s3_secret_access_key,
            allow_http=s3_allow_http,
        )
    elif scheme in ("gs", "az"):
        store = from_url(url)
    elif scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"Storage URL {url!r} must name an absolute path: file:///absolute/path")
        store = LocalStore(Path(unquote(parts.path)), mkdir=True, automatic_cleanup=True)
    elif scheme == "memory":
        store = MemoryStore()
    else:
        raise ValueError(f"Unsupported storage URL scheme {parts.scheme!r} in {url!r}")
    presigns = scheme in ("s3", "gs", "az")
    signer = None if presigns else link_signer or LinkSigner(secrets, clock, public_base_url)
    return ObstoreBlobStore(store, clock=clock, link_signer=signer)


def _s3_store(
    url: str,
    *,
    endpoint: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    allow_http: bool,
) -> S3Store:
    config: S3Config = {}
    if endpoint:
        config["endpoint"] = endpoint
        # Custom endpoints (MinIO, moto, Ceph) usually have no per-bucket host names.
        config["virtual_hosted_style_request"] = False
    if region:
        config["region"] = region
    if access_key_id:
        config["access_key_id"] = access_key_id
    if secret_access_key:
        config["secret_access_key"] = secret_access_key
    client_options: ClientConfig = {"allow_http": allow_http}
    return S3Store.from_url(url, config=config, client_options=client_options)
